//! Any bytes as a stored value, and as a value given to the store: `decode` never panics, damage
//! is an error that names no content, and whatever `store_form` keeps reads back as given.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use wa_auth_core::codec::{self, COMPACT, VERBATIM};

fuzz_target!(|data: &[u8]| {
    // as stored bytes
    match codec::decode(data) {
        Ok(text) => match data.first() {
            Some(&COMPACT) => {
                // an expanded compact value is JSON (as deep as the decoder allows)
                if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&text) {
                    assert!(e.to_string().contains("recursion limit"), "{e}");
                }
                // and goes through the store again like any value
                if let Ok(text) = std::str::from_utf8(&text) {
                    common::check_round_trip(text);
                }
            }
            Some(&VERBATIM) => assert_eq!(text, &data[1..]),
            _ => assert_eq!(text, data),
        },
        Err(e) => {
            assert_eq!(data.first(), Some(&COMPACT));
            assert_eq!(e.code(), "ERR_CORRUPT_VALUE");
            common::check_error_message(&e.to_string());
        }
    }

    // as a value given to the store
    for compact in [true, false] {
        let stored = codec::store_form(data, compact);
        let back = codec::decode(stored.as_deref().unwrap_or(data)).expect("stored form decodes");
        match stored.as_deref().and_then(<[u8]>::first) {
            Some(&COMPACT) => {
                assert!(compact);
                let a: serde_json::Value = serde_json::from_slice(data).unwrap();
                let b: serde_json::Value = serde_json::from_slice(&back).unwrap();
                assert!(common::same(&a, &b));
            }
            _ => assert_eq!(back, data),
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        common::check_round_trip(text);
    }
});
