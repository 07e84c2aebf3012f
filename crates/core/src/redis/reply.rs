//! Reading fred's replies into the tier's types.

use fred::bytes::Bytes;

use super::Meta;
use crate::envelope::{self, Opened};
use crate::error::{Error, Result};

pub(super) fn bytes_of(v: fred::types::Value) -> Result<Option<Bytes>> {
    match v {
        fred::types::Value::Null => Ok(None),
        fred::types::Value::Bytes(b) => Ok(Some(b)),
        fred::types::Value::String(s) => Ok(Some(s.into_inner())),
        other => Err(Error::Redis(format!(
            "unexpected reply of kind {}",
            other.kind()
        ))),
    }
}

pub(super) fn opened(v: fred::types::Value) -> Result<Option<Opened>> {
    bytes_of(v)?.map(|b| envelope::open(&b)).transpose()
}

pub(super) fn array(
    v: fred::types::Value,
    n: usize,
    what: &str,
) -> Result<Vec<fred::types::Value>> {
    let values = match v {
        fred::types::Value::Array(values) => values,
        single if n == 1 => vec![single],
        other => {
            return Err(Error::Redis(format!(
                "unexpected {what} reply of kind {}",
                other.kind()
            )))
        }
    };
    if values.len() != n {
        return Err(Error::Redis(format!(
            "{what} answered {} values for {n} fields",
            values.len()
        )));
    }
    Ok(values)
}

/// `used_memory` of an `INFO memory` reply.
pub(super) fn used_memory_of(info: &str) -> Result<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| Error::Redis("INFO memory has no used_memory".into()))
}

pub(super) fn meta_of(v: fred::types::Value) -> Result<Meta> {
    let mut vs = array(v, 3, "HMGET meta")?.into_iter();
    let ver = vs
        .next()
        .and_then(|v| v.as_string())
        .map(|s| s.parse::<u64>())
        .transpose()
        .map_err(|_| Error::CorruptValue("a session's Redis version is not a number".into()))?
        .unwrap_or(0);
    let gen = vs.next().and_then(|v| v.as_string()).unwrap_or_default();
    let sql_behind = vs
        .next()
        .and_then(|v| v.as_string())
        .is_some_and(|s| s == "1");
    Ok(Meta {
        ver,
        gen,
        sql_behind,
    })
}
