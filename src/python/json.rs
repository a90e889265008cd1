//! Encoding handler results (dict, list and what they contain) as JSON
//! without `json.dumps`: orjson when the user's environment has it, else
//! this Rust walker over the Python objects.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

const MAX_DEPTH: usize = 128;

/// Appends the JSON encoding of `obj` to `out`.
pub fn encode(obj: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
    write_value(obj, out, 0)
}

fn write_value(obj: &Bound<'_, PyAny>, out: &mut Vec<u8>, depth: usize) -> PyResult<()> {
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err("JSON nesting is too deep"));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        write_str(s.to_str()?, out);
    } else if obj.is_none() {
        out.extend_from_slice(b"null");
    } else if let Ok(b) = obj.cast::<PyBool>() {
        out.extend_from_slice(if b.is_true() { b"true" } else { b"false" });
    } else if let Ok(i) = obj.cast::<PyInt>() {
        match i.extract::<i64>() {
            // serde_json writes the digits straight into `out` (no String).
            Ok(v) => serde_json::to_writer(&mut *out, &v).map_err(|e| PyValueError::new_err(e.to_string()))?,
            Err(_) => out.extend_from_slice(i.str()?.to_str()?.as_bytes()),
        }
    } else if let Ok(f) = obj.cast::<PyFloat>() {
        let v = f.value();
        if !v.is_finite() {
            return Err(PyValueError::new_err(format!("{v} is not valid JSON")));
        }
        serde_json::to_writer(&mut *out, &v).map_err(|e| PyValueError::new_err(e.to_string()))?;
    } else if let Ok(d) = obj.cast::<PyDict>() {
        out.push(b'{');
        for (n, (k, v)) in d.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            write_key(&k, out)?;
            out.push(b':');
            write_value(&v, out, depth + 1)?;
        }
        out.push(b'}');
    } else if let Ok(l) = obj.cast::<PyList>() {
        write_array(l.iter(), out, depth)?;
    } else if let Ok(t) = obj.cast::<PyTuple>() {
        write_array(t.iter(), out, depth)?;
    } else {
        let ty = obj.get_type().name()?;
        return Err(PyTypeError::new_err(format!("Object of type {ty} is not JSON serializable")));
    }
    Ok(())
}

fn write_array<'py>(items: impl Iterator<Item = Bound<'py, PyAny>>, out: &mut Vec<u8>, depth: usize) -> PyResult<()> {
    out.push(b'[');
    for (n, v) in items.enumerate() {
        if n > 0 {
            out.push(b',');
        }
        write_value(&v, out, depth + 1)?;
    }
    out.push(b']');
    Ok(())
}

/// Keys: strings as they are; int, float, bool and None as json.dumps writes them.
fn write_key(k: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
    if let Ok(s) = k.cast::<PyString>() {
        write_str(s.to_str()?, out);
        return Ok(());
    }
    let mut tmp = Vec::new();
    if k.is_none() || k.cast::<PyBool>().is_ok() || k.cast::<PyInt>().is_ok() || k.cast::<PyFloat>().is_ok() {
        write_value(k, &mut tmp, 0)?;
        let s = String::from_utf8_lossy(&tmp);
        write_str(&s, out);
        return Ok(());
    }
    let ty = k.get_type().name()?;
    Err(PyTypeError::new_err(format!("keys must be str, int, float, bool or None, not {ty}")))
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 0xf) as usize]]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::write_str;

    #[test]
    fn string_escapes() {
        let mut out = Vec::new();
        write_str("a\"b\\c\nd\u{1}é", &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "\"a\\\"b\\\\c\\nd\\u0001é\"");
    }
}
