//! JSON text through the compact form and back reads as the same value, or is kept as written.
//!
//! An input starting with `{`, `[` or `"` is used as JSON text itself (the seeds are Baileys'
//! values, mutated by libFuzzer); any other input drives a generator of JSON trees that leans to
//! what the codec treats specially: numbers at the edges of i64/u64/f64 spelled in many ways,
//! base64 strings, canonical and not, `{"type":"Buffer","data":…}` objects and Baileys' keys.

#![no_main]

mod common;

use arbitrary::{Result, Unstructured};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;

/// Keys the codec knows (a few of them), and some it does not.
const KEYS: &[&str] = &[
    "type",
    "data",
    "public",
    "private",
    "_sessions",
    "registrationId",
    "currentRatchet",
    "rootKey",
    "indexInfo",
    "baseKey",
    "_chains",
    "chainKey",
    "counter",
    "messageKeys",
    "keyData",
    "fingerprint",
    "timestamp",
    "version",
    "hash",
    "indexValueMap",
    "valueMac",
    "noiseKey",
    "signedPreKey",
    "keyPair",
    "signature",
    "keyId",
    "advSecretKey",
    "me",
    "id",
    "name",
    "lid",
    "account",
    "notify",
    "Buffer",
    "",
    "é",
    "5511999999999@s.whatsapp.net",
    "1.0",
    "a\"b\\c",
];

/// Numbers at the edges, spelled as they are written.
const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-0.0",
    "0.0",
    "0e0",
    "-0e-0",
    "1",
    "-1",
    "1.0",
    "1e0",
    "1E+0",
    "10",
    "1e1",
    "1e21",
    "1e+21",
    "1e22",
    "1e23",
    "9.999999999999999e22",
    "5e-324",
    "-5e-324",
    "4.9e-324",
    "2.4703282292062328e-324",
    "2.2250738585072011e-308",
    "2.2250738585072014e-308",
    "1.7976931348623157e308",
    "-1.7976931348623157e308",
    "1.7976931348623158e308",
    "1e308",
    "1e309",
    "1e-400",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "100000000000000000000000000000000000000000",
    "9007199254740992",
    "9007199254740993",
    "9007199254740993.0",
    "0.1",
    "0.2",
    "0.30000000000000004",
    "1.0000000000000002",
    "8144.00654060743450",
    "98770.55461952741",
    "1700000000000",
    "1700000000.123",
];

struct Gen<'a, 'b> {
    u: &'a mut Unstructured<'b>,
    out: String,
    /// `\uXXXX` for every non-ASCII character and spaces around separators
    ascii: bool,
}

impl Gen<'_, '_> {
    fn str(&mut self, s: &str) -> Result<()> {
        if !self.ascii {
            self.out.push_str(&serde_json::to_string(s).unwrap());
            return Ok(());
        }
        self.out.push('"');
        for c in s.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '/' if self.u.arbitrary()? => self.out.push_str("\\/"),
                ' '..='~' => self.out.push(c),
                _ => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        self.out.push_str(&format!("\\u{unit:04X}"));
                    }
                }
            }
        }
        self.out.push('"');
        Ok(())
    }

    fn digits(&mut self, max: usize) -> Result<String> {
        let n = self.u.int_in_range(1..=max)?;
        let mut s = String::new();
        for _ in 0..n {
            s.push(char::from(b'0' + self.u.int_in_range(0..=9u8)?));
        }
        Ok(s)
    }

    fn number(&mut self) -> Result<String> {
        Ok(match self.u.int_in_range(0..=8u8)? {
            0 => self.u.arbitrary::<i64>()?.to_string(),
            1 => self.u.arbitrary::<u64>()?.to_string(),
            2 => self.u.int_in_range(-2000i64..=2000)?.to_string(),
            3..=5 => {
                let f = f64::from_bits(self.u.arbitrary()?);
                let f = if f.is_finite() { f } else { 0.5 };
                match self.u.int_in_range(0..=3u8)? {
                    0 => serde_json::to_string(&f).unwrap(),
                    1 => format!("{f:e}"),
                    2 => format!("{f:E}"),
                    _ => format!("{f}"),
                }
            }
            6 => {
                // a decimal of few digits, as people and JavaScript write them
                let f =
                    f64::from(self.u.arbitrary::<i32>()?) / 10f64.powi(self.u.int_in_range(0..=8)?);
                format!("{f}")
            }
            7 => {
                // the JSON grammar with many digits
                let mut s = String::new();
                if self.u.arbitrary()? {
                    s.push('-');
                }
                let int = self.digits(30)?;
                s.push_str(if int.starts_with('0') { "0" } else { &int });
                if self.u.arbitrary()? {
                    s.push('.');
                    s.push_str(&self.digits(30)?);
                }
                if self.u.arbitrary()? {
                    s.push(*self.u.choose(&['e', 'E'])?);
                    s.push_str(self.u.choose(&["", "+", "-"])?);
                    s.push_str(&self.digits(4)?);
                }
                s
            }
            _ => (*self.u.choose(NUMBERS)?).to_owned(),
        })
    }

    fn base64(&mut self) -> Result<String> {
        let bytes: &[u8] = self.u.arbitrary()?;
        let mut s = STANDARD.encode(bytes);
        match self.u.int_in_range(0..=5u8)? {
            0 if !s.is_empty() => {
                // padding bits set, or one character changed
                let i = self.u.choose_index(s.len())?;
                let c = *self.u.choose(b"AB+/=-_ ")?;
                s.replace_range(i..=i, &char::from(c).to_string());
            }
            1 => s.push('='),
            2 if !s.is_empty() => {
                s.pop();
            }
            _ => {}
        }
        Ok(s)
    }

    fn string(&mut self) -> Result<String> {
        Ok(match self.u.int_in_range(0..=3u8)? {
            0 => self.u.arbitrary()?,
            1 | 2 => self.base64()?,
            _ => (*self.u.choose(KEYS)?).to_owned(),
        })
    }

    fn key(&mut self) -> Result<String> {
        if self.u.ratio(3, 4)? {
            Ok((*self.u.choose(KEYS)?).to_owned())
        } else {
            self.u.arbitrary()
        }
    }

    fn sep(&mut self, s: &str) {
        self.out.push_str(s);
        if self.ascii {
            self.out.push(' ');
        }
    }

    fn value(&mut self, depth: usize) -> Result<()> {
        let kinds = if depth >= 6 || self.u.is_empty() {
            5
        } else {
            8
        };
        match self.u.int_in_range(0..=kinds)? {
            0 => self
                .out
                .push_str(self.u.choose(&["null", "true", "false"])?),
            1 | 2 => {
                let n = self.number()?;
                self.out.push_str(&n);
            }
            3 | 4 => {
                let s = self.string()?;
                self.str(&s)?;
            }
            5 => {
                // a Buffer, or something close to one
                let data = self.base64()?;
                let shape = self.u.int_in_range(0..=5u8)?;
                self.out.push('{');
                match shape {
                    0 => {
                        self.str("data")?;
                        self.sep(":");
                        self.str(&data)?;
                        self.sep(",");
                        self.str("type")?;
                        self.sep(":");
                        self.str("Buffer")?;
                    }
                    _ => {
                        self.str("type")?;
                        self.sep(":");
                        self.str(if shape == 1 { "buffer" } else { "Buffer" })?;
                        self.sep(",");
                        self.str("data")?;
                        self.sep(":");
                        self.str(&data)?;
                        if shape == 2 {
                            self.sep(",");
                            self.str("extra")?;
                            self.sep(":");
                            self.out.push('1');
                        }
                    }
                }
                self.out.push('}');
            }
            6 | 7 => {
                self.out.push('[');
                let n = self.u.int_in_range(0..=8u8)?;
                for i in 0..n {
                    if i > 0 {
                        self.sep(",");
                    }
                    self.value(depth + 1)?;
                }
                self.out.push(']');
            }
            _ => {
                self.out.push('{');
                let n = self.u.int_in_range(0..=8u8)?;
                for i in 0..n {
                    if i > 0 {
                        self.sep(",");
                    }
                    let k = self.key()?;
                    self.str(&k)?;
                    self.sep(":");
                    self.value(depth + 1)?;
                }
                self.out.push('}');
            }
        }
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    if matches!(data.first(), Some(b'{' | b'[' | b'"')) {
        if let Ok(text) = std::str::from_utf8(data) {
            common::check_round_trip(text);
        }
        return;
    }
    let mut u = Unstructured::new(data);
    let Ok(ascii) = u.arbitrary() else { return };
    let mut g = Gen {
        u: &mut u,
        out: String::new(),
        ascii,
    };
    if g.value(0).is_err() {
        return;
    }
    let text = g.out;
    common::check_round_trip(&text);
    // the same value as serde_json spells it
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
        common::check_round_trip(&serde_json::to_string(&v).unwrap());
    }
});
