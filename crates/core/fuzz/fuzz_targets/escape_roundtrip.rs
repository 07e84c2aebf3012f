//! `ident::escape` of any UTF-8 text: `unescape` undoes it, the result holds none of the
//! characters that Redis key names must not carry, and distinct names stay distinct.

#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use wa_auth_core::ident::{escape, unescape};

const FORBIDDEN: [char; 9] = ['{', '}', '*', '?', '[', ']', '\\', ':', ' '];

fn check(s: &str) -> String {
    let e = escape(s);
    assert!(!e.contains(FORBIDDEN), "{s:?} escaped to {e:?}");
    assert_eq!(unescape(&e).as_deref(), Some(s), "{s:?} escaped to {e:?}");
    e
}

fn distinct(a: &str, b: &str) {
    if a != b {
        assert_ne!(escape(a), escape(b), "{a:?} and {b:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let whole = String::from_utf8_lossy(data);
    check(&whole);
    let _ = unescape(&whole); // never panics, whatever it is given
    let mut u = Unstructured::new(data);
    let (Ok(a), Ok(b)) = (u.arbitrary::<String>(), u.arbitrary::<String>()) else {
        return;
    };
    let (ea, eb) = (check(&a), check(&b));
    let _ = unescape(&a);
    // pairs of names that are close to each other, or to the other's escaped form
    let concat = format!("{a}{b}");
    check(&concat);
    for (x, y) in [
        (a.as_str(), b.as_str()),
        (&a, &ea),
        (&b, &eb),
        (&a, &concat),
        (&concat, &format!("{a}%{b}")),
        (&concat, &format!("{a}:{b}")),
        (&concat, &format!("{ea}{b}")),
        (&format!("{a}:"), &format!("{a}%3A")),
        (&format!("{a}%"), &format!("{a}%25")),
    ] {
        check(x);
        check(y);
        distinct(x, y);
    }
});
