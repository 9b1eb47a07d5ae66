//! Reading a JSON object into a struct, and only an object.
//!
//! Why: serde's derived `Deserialize` for a struct also accepts a JSON array and
//! reads it positionally, so `["room:1", 5]` would be a valid publish body and
//! `[3, "e"]` a valid `since`: a second, undocumented syntax for every request.
//! Every client frame, field object and HTTP body is read through here instead.

use serde::Deserialize;

/// Why a value could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("expected a JSON object")]
    NotAnObject,
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// `T` from `json`, which must be one JSON object (leading whitespace allowed).
pub fn from_object<'a, T: Deserialize<'a>>(json: &'a [u8]) -> Result<T, ObjectError> {
    if json.trim_ascii_start().first() != Some(&b'{') {
        return Err(ObjectError::NotAnObject);
    }
    Ok(serde_json::from_slice(json)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Pair {
        a: u32,
        b: String,
    }

    #[test]
    fn objects_are_read_and_arrays_are_not_read_positionally() {
        assert_eq!(
            from_object::<Pair>(br#" {"a":1,"b":"x"}"#).unwrap(),
            Pair {
                a: 1,
                b: "x".into()
            }
        );
        // What serde alone accepts:
        assert!(serde_json::from_slice::<Pair>(br#"[1,"x"]"#).is_ok());
        for refused in [&br#"[1,"x"]"#[..], b"1", b"\"s\"", b"", b"null"] {
            assert!(
                matches!(from_object::<Pair>(refused), Err(ObjectError::NotAnObject)),
                "{:?}",
                std::str::from_utf8(refused)
            );
        }
        assert!(matches!(
            from_object::<Pair>(br#"{"a":"1"}"#),
            Err(ObjectError::Json(_))
        ));
    }
}
