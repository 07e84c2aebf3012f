//! Statements the tools pass verbatim (reading another package's tables to import them), with
//! every column decoded to the few shapes JavaScript needs.

/// One column of a row read by [`super::SqlStore::query_rows`].
#[derive(Clone, PartialEq)]
pub enum Cell {
    Null,
    Text(String),
    Bytes(Vec<u8>),
    Int(i64),
    Float(f64),
}

impl std::fmt::Debug for Cell {
    // values may be key material: say only their shape
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cell::Null => f.write_str("Null"),
            Cell::Text(s) => write!(f, "Text({} bytes)", s.len()),
            Cell::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Cell::Int(_) => f.write_str("Int"),
            Cell::Float(_) => f.write_str("Float"),
        }
    }
}

/// A row: column names with their cells, in select order.
pub type RawRow = Vec<(String, Cell)>;

/// Runs `sql` with `params` bound as text on one dialect's pool and decodes every column by the
/// first shape it takes: text, bytes, integer, float, boolean (as 0/1).
macro_rules! query_rows {
    ($pool:expr, $sql:expr, $params:expr) => {{
        // the tools' own statement text, never built from stored data
        let mut q = sqlx::query(sqlx::AssertSqlSafe($sql.to_string()));
        for p in $params {
            q = q.bind(p.as_str());
        }
        let rows = q.fetch_all($pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut cells = Vec::with_capacity(sqlx::Row::columns(row).len());
            for (i, col) in sqlx::Row::columns(row).iter().enumerate() {
                let cell = if let Ok(v) = sqlx::Row::try_get::<Option<String>, _>(row, i) {
                    v.map_or($crate::sql::raw::Cell::Null, $crate::sql::raw::Cell::Text)
                } else if let Ok(v) = sqlx::Row::try_get::<Option<Vec<u8>>, _>(row, i) {
                    v.map_or($crate::sql::raw::Cell::Null, $crate::sql::raw::Cell::Bytes)
                } else if let Ok(v) = sqlx::Row::try_get::<Option<i64>, _>(row, i) {
                    v.map_or($crate::sql::raw::Cell::Null, $crate::sql::raw::Cell::Int)
                } else if let Ok(v) = sqlx::Row::try_get::<Option<i32>, _>(row, i) {
                    v.map_or($crate::sql::raw::Cell::Null, |v| $crate::sql::raw::Cell::Int(v.into()))
                } else if let Ok(v) = sqlx::Row::try_get::<Option<f64>, _>(row, i) {
                    v.map_or($crate::sql::raw::Cell::Null, $crate::sql::raw::Cell::Float)
                } else if let Ok(v) = sqlx::Row::try_get::<Option<bool>, _>(row, i) {
                    v.map_or($crate::sql::raw::Cell::Null, |v| $crate::sql::raw::Cell::Int(v.into()))
                } else if sqlx::Row::try_get_raw(row, i)
                    .map(|v| sqlx::ValueRef::is_null(&v))
                    .unwrap_or(false)
                {
                    $crate::sql::raw::Cell::Null
                } else {
                    return Err(sqlx::Error::Decode(
                        format!(
                            "column \"{}\" has a type the tools do not read; cast it to text in the query",
                            sqlx::Column::name(col)
                        )
                        .into(),
                    ));
                };
                cells.push((sqlx::Column::name(col).to_string(), cell));
            }
            out.push(cells);
        }
        Ok::<_, sqlx::Error>(out)
    }};
}
pub(super) use query_rows;
