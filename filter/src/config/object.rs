//! Reading a JSON document field by field, with the full path of each field
//! in every error.

use serde_json::{Map, Number, Value};

use super::ConfigError;
use super::validate::RawCohort;

/// A JSON object being read field by field; [`Object::finish`] rejects the
/// keys nobody asked for, so a misspelt field is an error, never ignored.
///
/// Walking a `serde_json::Value` rather than deriving `Deserialize` keeps the
/// full path in every message (`cohorts[1].weight`, `cookie.nmae`) and keeps
/// the `.wasm` small.
pub(super) struct Object<'a> {
    path: String,
    map: &'a Map<String, Value>,
    seen: Vec<&'static str>,
}

impl<'a> Object<'a> {
    pub(super) fn new(path: &str, value: &'a Value) -> Result<Object<'a>, ConfigError> {
        match value {
            Value::Object(map) => Ok(Object {
                path: path.to_string(),
                map,
                seen: Vec::new(),
            }),
            other => Err(ConfigError::new(
                path,
                "must be a JSON object",
                Some(describe(other)),
            )),
        }
    }

    pub(super) fn field_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value of `key`; JSON `null` counts as absent (Helm renders unset
    /// optional values that way).
    pub(super) fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.seen.push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub(super) fn string(&mut self, key: &'static str) -> Result<Option<String>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(ConfigError::new(
                self.field_path(key),
                "must be a string",
                Some(describe(other)),
            )),
        }
    }

    pub(super) fn boolean(&mut self, key: &'static str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(ConfigError::new(
                self.field_path(key),
                "must be true or false",
                Some(describe(other)),
            )),
        }
    }

    pub(super) fn number(&mut self, key: &'static str) -> Result<Option<Number>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(Some(n.clone())),
            Some(other) => Err(ConfigError::new(
                self.field_path(key),
                "must be a number",
                Some(describe(other)),
            )),
        }
    }

    pub(super) fn object(&mut self, key: &'static str) -> Result<Option<Object<'a>>, ConfigError> {
        let path = self.field_path(key);
        self.get(key).map(|v| Object::new(&path, v)).transpose()
    }

    pub(super) fn cohorts(
        &mut self,
        key: &'static str,
    ) -> Result<Option<Vec<RawCohort>>, ConfigError> {
        let path = self.field_path(key);
        let items = match self.get(key) {
            None => return Ok(None),
            Some(Value::Array(items)) => items,
            Some(other) => {
                return Err(ConfigError::new(
                    path,
                    "must be a list of {name, weight}",
                    Some(describe(other)),
                ));
            }
        };
        let mut cohorts = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let mut o = Object::new(&format!("{path}[{i}]"), item)?;
            let cohort = RawCohort {
                name: o.string("name")?,
                weight: o.number("weight")?,
            };
            o.finish()?;
            cohorts.push(cohort);
        }
        Ok(Some(cohorts))
    }

    pub(super) fn finish(self) -> Result<(), ConfigError> {
        match self.map.keys().find(|k| !self.seen.contains(&k.as_str())) {
            Some(unknown) => Err(ConfigError::new(
                self.field_path_owned(unknown),
                format!(
                    "is not a known field (known here: {})",
                    self.seen.join(", ")
                ),
                None,
            )),
            None => Ok(()),
        }
    }

    pub(super) fn field_path_owned(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

/// A JSON value as an error message shows it, shortened.
pub(super) fn describe(value: &Value) -> String {
    shorten(value.to_string())
}

/// Keeps log lines readable when the bad value is long.
pub(super) fn shorten(text: String) -> String {
    if text.len() > 80 {
        let mut end = 77;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &text[..end])
    } else {
        text
    }
}
