//! Minimal `.npy` (NumPy format 1.0–3.0) reading and writing: little-endian `f4`, `f8`, `i8`,
//! `i4`, `u1`, C order — what PyTorch/NumPy users hand over. Malformed files are errors, never
//! panics, and the declared size is checked against the bytes present before allocating.

use ndarray::{ArrayD, IxDyn};

/// Why a `.npy` file cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct NpyError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub problem: String,
}

/// Reads a `.npy` file as `f64`.
pub fn read(path: &std::path::Path) -> Result<ArrayD<f64>, NpyError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| NpyError { path: p.clone(), problem: e.to_string() })?;
    parse(&bytes).map_err(|problem| NpyError { path: p, problem })
}

/// What a `.npy` header says: the element type, the shape and where the data starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The dtype, e.g. `<f8`.
    pub descr: String,
    /// The array's shape.
    pub shape: Vec<usize>,
    /// Byte offset of the first element.
    pub data_offset: usize,
    /// Bytes per element.
    pub elem_size: usize,
}

impl Header {
    /// Elements in all (checked against overflow when the header was parsed).
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// The element at `c` (`elem_size` little-endian bytes) as `f64`.
    pub fn convert(&self, c: &[u8]) -> f64 {
        match self.descr.as_str() {
            "<f4" => f32::from_le_bytes(c.try_into().expect("4")) as f64,
            "<f8" => f64::from_le_bytes(c.try_into().expect("8")),
            "<i8" => i64::from_le_bytes(c.try_into().expect("8")) as f64,
            "<i4" => i32::from_le_bytes(c.try_into().expect("4")) as f64,
            _ => c[0] as f64,
        }
    }
}

/// Bytes to read from the start of a file to be sure to hold any header [`header`] accepts.
pub const MAX_HEADER: usize = 65_536 + 12;

/// Parses the header at the start of `b` (the whole file, or at least its first
/// [`MAX_HEADER`] bytes).
pub fn header(b: &[u8]) -> Result<Header, String> {
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (bad magic)".into());
    }
    let (hlen, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    if hlen > 65_536 {
        return Err(format!("header of {hlen} bytes is implausibly long"));
    }
    let header = b.get(start..start + hlen).ok_or("truncated header")?;
    let header = std::str::from_utf8(header).map_err(|_| "header is not text")?;
    let field = |key: &str| -> Result<&str, String> {
        let i = header.find(&format!("'{key}'")).ok_or(format!("header has no {key:?}"))?;
        let rest = header[i + key.len() + 2..].trim_start().strip_prefix(':').ok_or("malformed header")?.trim_start();
        Ok(rest)
    };
    let descr = field("descr")?;
    let descr = descr.strip_prefix('\'').and_then(|d| d.split('\'').next()).ok_or("malformed descr")?;
    if field("fortran_order")?.starts_with("True") {
        return Err("Fortran-order arrays are not supported: save with np.ascontiguousarray".into());
    }
    let shape_s = field("shape")?;
    let shape_s = shape_s.strip_prefix('(').and_then(|s| s.split(')').next()).ok_or("malformed shape")?;
    let shape: Vec<usize> = shape_s
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| format!("bad dimension {s:?}")))
        .collect::<Result<_, _>>()?;
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("shape overflows")?;
    let elem_size = match descr {
        "<f4" | "<i4" => 4,
        "<f8" | "<i8" => 8,
        "|u1" => 1,
        other => return Err(format!("dtype {other:?} is not supported (use float32, float64, int64, int32 or uint8)")),
    };
    Ok(Header { descr: descr.to_string(), shape, data_offset: start + hlen, elem_size })
}

/// Parses `.npy` bytes as `f64`.
pub fn parse(b: &[u8]) -> Result<ArrayD<f64>, String> {
    let h = header(b)?;
    let (n, size) = (h.elements(), h.elem_size);
    let data = &b[h.data_offset..];
    if n.checked_mul(size) != Some(data.len()) {
        return Err(format!(
            "shape {:?} of {} needs {} bytes, the file has {}",
            h.shape,
            h.descr,
            n.saturating_mul(size),
            data.len()
        ));
    }
    let v: Vec<f64> = data.chunks_exact(size).map(|c| h.convert(c)).collect();
    ArrayD::from_shape_vec(IxDyn(&h.shape), v).map_err(|e| e.to_string())
}

/// A version-1.0 `.npy` header for a C-order `f64` array of `shape` (data follows it).
pub fn header_bytes(shape: &[usize]) -> Vec<u8> {
    let shape = match shape {
        [] => "()".to_string(),
        [d] => format!("({d},)"),
        s => format!("({})", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut h = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out
}

/// Serialises an `f64` array as `.npy` (version 1.0, C order).
pub fn to_bytes(a: &ArrayD<f64>) -> Vec<u8> {
    let mut out = header_bytes(a.shape());
    for v in a.as_standard_layout().iter() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Writes an `f64` array as `.npy`.
pub fn write(path: &std::path::Path, a: &ArrayD<f64>) -> std::io::Result<()> {
    std::fs::write(path, to_bytes(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_errors() {
        let a = ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1.0, -2.5, 3.0, 4.0, 5.0, 6.25]).unwrap();
        assert_eq!(parse(&to_bytes(&a)).unwrap(), a);
        let mut b = to_bytes(&a);
        b.truncate(b.len() - 1);
        assert!(parse(&b).unwrap_err().contains("needs 48 bytes"));
        assert!(parse(b"hello world").is_err());
        let v = ArrayD::from_shape_vec(IxDyn(&[3]), vec![1.0, 2.0, 3.0]).unwrap();
        assert_eq!(parse(&to_bytes(&v)).unwrap(), v);
    }
}
