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

/// Parses `.npy` bytes as `f64`.
pub fn parse(b: &[u8]) -> Result<ArrayD<f64>, String> {
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (bad magic)".into());
    }
    let (hlen, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => return Err(format!("unsupported .npy version {v}")),
    };
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
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("shape overflows")?;
    let data = &b[start + hlen..];
    let (size, conv): (usize, fn(&[u8]) -> f64) = match descr {
        "<f4" => (4, |c| f32::from_le_bytes(c.try_into().expect("4")) as f64),
        "<f8" => (8, |c| f64::from_le_bytes(c.try_into().expect("8"))),
        "<i8" => (8, |c| i64::from_le_bytes(c.try_into().expect("8")) as f64),
        "<i4" => (4, |c| i32::from_le_bytes(c.try_into().expect("4")) as f64),
        "|u1" => (1, |c| c[0] as f64),
        other => return Err(format!("dtype {other:?} is not supported (use float32, float64, int64, int32 or uint8)")),
    };
    if n.checked_mul(size) != Some(data.len()) {
        return Err(format!(
            "shape {shape:?} of {descr} needs {} bytes, the file has {}",
            n.saturating_mul(size),
            data.len()
        ));
    }
    let v: Vec<f64> = data.chunks_exact(size).map(conv).collect();
    ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(|e| e.to_string())
}

/// Serialises an `f64` array as `.npy` (version 1.0, C order).
pub fn to_bytes(a: &ArrayD<f64>) -> Vec<u8> {
    let shape = match a.shape() {
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
