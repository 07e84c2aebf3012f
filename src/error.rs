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
        Some(v) if v.is_finite() && v > 0.0 && v < 1e12 => {
            Ok(std::time::Duration::from_millis(v as u64))
        }
        Some(v) => Err(to_napi(Error::invalid(format!(
            "a duration in milliseconds must be a positive number, got {v}"
        )))),
    }
}
