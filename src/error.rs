//! Core errors cross into JavaScript as `"<CODE>: <message>"`; the facade (`index.js`) turns the
//! prefix into `err.code`. napi async functions cannot carry a custom status, hence the prefix.

use wa_auth_core::Error;

pub fn to_napi(e: Error) -> napi::Error {
    napi::Error::new(napi::Status::GenericFailure, format!("{}: {e}", e.code()))
}

pub trait IntoNapi<T> {
    fn napi(self) -> napi::Result<T>;
}

impl<T> IntoNapi<T> for Result<T, Error> {
    fn napi(self) -> napi::Result<T> {
        self.map_err(to_napi)
    }
}

/// Milliseconds from JavaScript as a duration; `None` or absent keeps the default.
pub fn millis(ms: Option<f64>, default: std::time::Duration) -> napi::Result<std::time::Duration> {
    match ms {
        None => Ok(default),
        Some(v) if (1.0..1e12).contains(&v) => Ok(std::time::Duration::from_millis(v as u64)),
        Some(v) => Err(to_napi(Error::invalid(format!(
            "a duration in milliseconds must be a positive number, got {v}"
        )))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn codes_travel_as_message_prefix() {
        let e = to_napi(Error::StoreClosed);
        assert!(e.reason.starts_with("ERR_STORE_CLOSED: "), "{}", e.reason);
    }

    #[test]
    fn millis_accepts_positive_numbers_only() {
        let d = Duration::from_secs(5);
        assert_eq!(millis(None, d).unwrap(), d);
        assert_eq!(millis(Some(250.0), d).unwrap(), Duration::from_millis(250));
        // below a millisecond would be a zero duration: a busy loop for an interval
        for bad in [0.0, 0.5, -1.0, f64::NAN, f64::INFINITY] {
            assert!(millis(Some(bad), d)
                .unwrap_err()
                .reason
                .starts_with("ERR_INVALID_ARGUMENT"));
        }
    }
}
