//! pyrs's one JSON contract, with or without orjson installed (README,
//! "JSON"): the bytes orjson writes with `OPT_SERIALIZE_NUMPY |
//! OPT_NON_STR_KEYS`, except that integers of any size are exact, `NaN` and
//! infinities are refused (orjson writes `null`), `Decimal` is a string, and
//! what orjson refuses but this encoder knows (big integers, numpy arrays that
//! are not C-contiguous or of another dtype, 0-d arrays, `Decimal`) is
//! encoded here.
//!
//! `dumps` uses orjson when it is importable and its answer is certain to be
//! the contract's (the value holds only plain types and finite floats, checked
//! without encoding, and orjson raised nothing); otherwise this Rust walker
//! decides, so the bytes and the errors are the same either way. Floats are written by serde_json (shortest
//! round-trip digits, the same text as orjson's).

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyBytes, PyDate, PyDateTime, PyDict, PyFloat, PyInt, PyList, PyString, PyTime, PyTuple, PyType,
};

const MAX_DEPTH: usize = 128;

/// Python objects the encoder recognises, looked up once.
struct Kinds {
    uuid: Py<PyType>,
    enum_: Py<PyType>,
    decimal: Py<PyType>,
    /// `orjson.dumps` and its option flags, when orjson is importable.
    orjson: Option<(Py<PyAny>, Py<PyAny>)>,
}

static KINDS: PyOnceLock<Kinds> = PyOnceLock::new();

/// Looks up what the encoder needs (imports orjson if it can), at start-up
/// rather than during the first request.
pub fn init(py: Python<'_>) -> PyResult<()> {
    kinds(py).map(|_| ())
}

fn kinds(py: Python<'_>) -> PyResult<&'static Kinds> {
    KINDS.get_or_try_init(py, || {
        let ty = |module: &str, name: &str| -> PyResult<Py<PyType>> {
            Ok(py.import(module)?.getattr(name)?.cast_into::<PyType>().map_err(PyErr::from)?.unbind())
        };
        let orjson = match py.import("orjson") {
            Ok(m) => {
                let option =
                    m.getattr("OPT_SERIALIZE_NUMPY")?.call_method1("__or__", (m.getattr("OPT_NON_STR_KEYS")?,))?;
                Some((m.getattr("dumps")?.unbind(), option.unbind()))
            }
            Err(_) => None,
        };
        Ok(Kinds { uuid: ty("uuid", "UUID")?, enum_: ty("enum", "Enum")?, decimal: ty("decimal", "Decimal")?, orjson })
    })
}

/// Appends the contract's JSON for `obj` to `out` (orjson when it gives the
/// same bytes, else the Rust encoder). On error `out` may hold a partial value.
pub fn dumps(obj: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
    let k = kinds(obj.py())?;
    if let Some((orjson, option)) = &k.orjson {
        if plain(obj, 0) {
            let py = obj.py();
            if let Ok(encoded) = orjson.bind(py).call1((obj, None::<Py<PyAny>>, option.bind(py))) {
                if let Ok(b) = encoded.cast::<PyBytes>() {
                    out.extend_from_slice(b.as_bytes());
                    return Ok(());
                }
            }
        }
    }
    encode(obj, out)
}

/// Whether orjson's bytes for `obj` are certainly the contract's: only str,
/// int, bool, None, finite floats, lists, tuples and dicts with str keys
/// (checked without encoding; orjson itself refuses ints past 64 bits, and
/// that error sends the value to the Rust encoder). Anything else, a NaN
/// (which orjson writes as `null`) included, goes to the Rust encoder.
fn plain(obj: &Bound<'_, PyAny>, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    if obj.is_exact_instance_of::<PyString>() || obj.is_none() || obj.is_exact_instance_of::<PyBool>() {
        return true;
    }
    if obj.is_exact_instance_of::<PyInt>() {
        return true;
    }
    if let Ok(f) = obj.cast_exact::<PyFloat>() {
        return f.value().is_finite();
    }
    if let Ok(d) = obj.cast_exact::<PyDict>() {
        return d.iter().all(|(k, v)| k.is_exact_instance_of::<PyString>() && plain(&v, depth + 1));
    }
    if let Ok(l) = obj.cast_exact::<PyList>() {
        return l.iter().all(|v| plain(&v, depth + 1));
    }
    if let Ok(t) = obj.cast_exact::<PyTuple>() {
        return t.iter().all(|v| plain(&v, depth + 1));
    }
    false
}

/// Appends the JSON encoding of `obj` to `out` with the Rust encoder alone.
pub fn encode(obj: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
    write_value(obj, out, 0, Float::F64)
}

/// How floats inside a value are written: numpy `float32`/`float16` values
/// as the shortest text that round-trips at 32 bits, like orjson.
#[derive(Clone, Copy, PartialEq)]
enum Float {
    F64,
    F32,
}

fn write_value(obj: &Bound<'_, PyAny>, out: &mut Vec<u8>, depth: usize, float: Float) -> PyResult<()> {
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
        write_int(i, out)?;
    } else if let Ok(f) = obj.cast::<PyFloat>() {
        write_float(f.value(), float, out)?;
    } else if let Ok(d) = obj.cast::<PyDict>() {
        out.push(b'{');
        for (n, (k, v)) in d.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            write_key(&k, out)?;
            out.push(b':');
            write_value(&v, out, depth + 1, float)?;
        }
        out.push(b'}');
    } else if let Ok(l) = obj.cast::<PyList>() {
        write_array(l.iter(), out, depth, float)?;
    } else if let Ok(t) = obj.cast::<PyTuple>() {
        write_array(t.iter(), out, depth, float)?;
    } else {
        write_other(obj, out, depth, float)?;
    }
    Ok(())
}

fn write_int(i: &Bound<'_, PyInt>, out: &mut Vec<u8>) -> PyResult<()> {
    match i.extract::<i64>() {
        // serde_json writes the digits straight into `out` (no String).
        Ok(v) => serde_json::to_writer(&mut *out, &v).map_err(|e| PyValueError::new_err(e.to_string())),
        // Any size, exactly (orjson stops at 64 bits). int.__repr__, not
        // __str__: an IntEnum member's str() is not its number.
        Err(_) => {
            out.extend_from_slice(
                i.py().get_type::<PyInt>().call_method1("__repr__", (i,))?.cast::<PyString>()?.to_str()?.as_bytes(),
            );
            Ok(())
        }
    }
}

fn write_float(v: f64, float: Float, out: &mut Vec<u8>) -> PyResult<()> {
    if !v.is_finite() {
        return Err(PyValueError::new_err(format!("{v} is not valid JSON (NaN and infinities are refused)")));
    }
    let written = match float {
        Float::F64 => serde_json::to_writer(&mut *out, &v),
        Float::F32 => serde_json::to_writer(&mut *out, &(v as f32)),
    };
    written.map_err(|e| PyValueError::new_err(e.to_string()))
}

/// datetime, date, time, UUID, Enum, dataclasses, Decimal and numpy values.
fn write_other(obj: &Bound<'_, PyAny>, out: &mut Vec<u8>, depth: usize, float: Float) -> PyResult<()> {
    let py = obj.py();
    let k = kinds(py)?;
    if obj.cast::<PyDateTime>().is_ok() || obj.cast::<PyDate>().is_ok() {
        write_str(obj.call_method0("isoformat")?.cast::<PyString>()?.to_str()?, out);
    } else if obj.cast::<PyTime>().is_ok() {
        if !obj.getattr("tzinfo")?.is_none() {
            return Err(PyTypeError::new_err("datetime.time must not have tzinfo set"));
        }
        write_str(obj.call_method0("isoformat")?.cast::<PyString>()?.to_str()?, out);
    } else if obj.is_instance(k.uuid.bind(py))? || obj.is_instance(k.decimal.bind(py))? {
        write_str(obj.str()?.to_str()?, out);
    } else if obj.is_instance(k.enum_.bind(py))? {
        write_value(&obj.getattr("value")?, out, depth + 1, float)?;
    } else if obj.get_type().hasattr("__dataclass_fields__")? {
        write_dataclass(obj, out, depth)?;
    } else if is_numpy(obj)? {
        write_numpy(obj, out, depth)?;
    } else {
        let ty = obj.get_type();
        return Err(PyTypeError::new_err(format!(
            "Type is not JSON serializable: {}.{}",
            ty.module()?.to_str()?,
            ty.qualname()?.to_str()?
        )));
    }
    Ok(())
}

/// Instance attributes (not those starting with `_`) in `__dict__` order, or
/// the fields of a dataclass with `__slots__`; as orjson does.
fn write_dataclass(obj: &Bound<'_, PyAny>, out: &mut Vec<u8>, depth: usize) -> PyResult<()> {
    let mut n = 0;
    let mut one = |name: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>| -> PyResult<()> {
        let name = name.cast::<PyString>()?.to_str()?;
        if name.starts_with('_') {
            return Ok(());
        }
        out.push(if n == 0 { b'{' } else { b',' });
        n += 1;
        write_str(name, out);
        out.push(b':');
        write_value(value, out, depth + 1, Float::F64)
    };
    match obj.getattr("__dict__").ok().and_then(|d| d.cast_into::<PyDict>().ok()) {
        Some(d) => {
            for (k, v) in d.iter() {
                one(&k, &v)?;
            }
        }
        None => {
            let fields = obj.get_type().getattr("__dataclass_fields__")?.cast_into::<PyDict>()?;
            for name in fields.keys() {
                let value = obj.getattr(name.cast::<PyString>()?)?;
                one(&name, &value)?;
            }
        }
    }
    if n == 0 {
        out.push(b'{');
    }
    out.push(b'}');
    Ok(())
}

/// A numpy array or scalar (its type lives in `numpy` and has a `dtype`).
fn is_numpy(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(obj.get_type().module()?.to_str()? == "numpy" && obj.hasattr("dtype")?)
}

/// Arrays become (nested) lists, scalars their Python value; `float32` and
/// `float16` keep 32-bit shortest digits; `datetime64` is ISO 8601 text.
fn write_numpy(obj: &Bound<'_, PyAny>, out: &mut Vec<u8>, depth: usize) -> PyResult<()> {
    let dtype = obj.getattr("dtype")?;
    let code: String = dtype.getattr("kind")?.extract()?;
    let itemsize: usize = dtype.getattr("itemsize")?.extract()?;
    let float = if code == "f" && itemsize <= 4 { Float::F32 } else { Float::F64 };
    let plain = if code == "M" {
        // datetime64 of any unit as a datetime (microseconds), like orjson.
        obj.call_method1("astype", ("datetime64[us]",))?.call_method0("tolist")?
    } else {
        obj.call_method0("tolist")?
    };
    write_value(&plain, out, depth + 1, float)
}

fn write_array<'py>(
    items: impl Iterator<Item = Bound<'py, PyAny>>,
    out: &mut Vec<u8>,
    depth: usize,
    float: Float,
) -> PyResult<()> {
    out.push(b'[');
    for (n, v) in items.enumerate() {
        if n > 0 {
            out.push(b',');
        }
        write_value(&v, out, depth + 1, float)?;
    }
    out.push(b']');
    Ok(())
}

/// Keys as orjson's `OPT_NON_STR_KEYS` writes them: str as is; int, float,
/// bool and None as their JSON text; date/time, UUID and int/str enums as
/// text; anything else is an error.
fn write_key(k: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
    if let Ok(s) = k.cast::<PyString>() {
        write_str(s.to_str()?, out);
        return Ok(());
    }
    let py = k.py();
    let is_scalar = |v: &Bound<'_, PyAny>| {
        v.is_none() || v.cast::<PyBool>().is_ok() || v.cast::<PyInt>().is_ok() || v.cast::<PyFloat>().is_ok()
    };
    let key = if is_scalar(k) {
        k.clone()
    } else if k.is_instance(kinds(py)?.enum_.bind(py))? && {
        let v = k.getattr("value")?;
        is_scalar(&v) || v.cast::<PyString>().is_ok()
    } {
        k.getattr("value")?
    } else if k.cast::<PyDateTime>().is_ok() || k.cast::<PyDate>().is_ok() || k.cast::<PyTime>().is_ok() {
        k.call_method0("isoformat")?
    } else if k.is_instance(kinds(py)?.uuid.bind(py))? {
        k.str()?.into_any()
    } else {
        let ty = k.get_type().name()?;
        return Err(PyTypeError::new_err(format!("Dict key must a type serializable with OPT_NON_STR_KEYS, not {ty}")));
    };
    if let Ok(s) = key.cast::<PyString>() {
        write_str(s.to_str()?, out);
        return Ok(());
    }
    let mut tmp = Vec::new();
    write_value(&key, &mut tmp, 0, Float::F64)?;
    write_str(&String::from_utf8_lossy(&tmp), out);
    Ok(())
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
