//! How deeply a JSON value nests. A publication's `data` is passed through as raw
//! JSON (never parsed into a tree), so nothing else bounds its nesting; but every
//! receiving client parses it, and 5000 nested arrays crash or stall many JSON
//! parsers (browsers' included). `--max-data-depth` bounds it at the door.

/// `Ok` when `json` (valid JSON) nests arrays and objects at most `max` deep.
/// A byte scan: brackets inside strings (escapes included) do not count.
pub fn check_depth(json: &str, max: usize) -> Result<(), String> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for b in json.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(format!(
                        "`data` nests arrays and objects more than {max} deep (--max-data-depth)"
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_depth;

    #[test]
    fn nesting_is_counted_outside_strings_only() {
        assert!(check_depth("1", 0).is_ok());
        assert!(check_depth("[]", 0).is_err());
        assert!(check_depth(r#"{"a":[1,{"b":[]}]}"#, 4).is_ok());
        assert!(check_depth(r#"{"a":[1,{"b":[]}]}"#, 3).is_err());
        assert!(check_depth(r#"["[[[[[[", "\"[[[["]"#, 1).is_ok());
        assert!(check_depth(r#"["\\", [[]]]"#, 2).is_err());
        let deep = "[".repeat(5000) + &"]".repeat(5000);
        assert!(check_depth(&deep, 32).is_err());
        let ok = "[".repeat(32) + &"]".repeat(32);
        assert!(check_depth(&ok, 32).is_ok());
    }
}
