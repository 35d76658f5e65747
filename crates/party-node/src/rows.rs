//! Bob's input and output files, a chunk of rows at a time: a prediction of any number of rows
//! holds one micro-batch of them in memory, never the file.
//!
//! * [`RowReader`] reads `.npy` (one of [`NPY_DTYPES`], C order, batch first) or `.csv`
//!   (numbers only, an optional header line) in chunks of rows; [`scan`] checks a
//!   whole file first (every value finite and inside the model's declared input range, rows of
//!   the right width), naming the first bad row and column, so a bad row 9,000 fails the job
//!   before any share moves, not after 8,999 rows.
//! * [`RowWriter`] writes rows to `<output>.partial` as they come and renames it to `<output>`
//!   only once every row is written and synced: a job that fails midway leaves no file that
//!   looks complete (the partial one is removed). It checks the file system's free space for
//!   the whole output before the job starts.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use mpc_ml::npy;
use ndarray::{ArrayD, IxDyn};

/// The `.npy` element types an input may have, as the CLI help and the docs list them. Floats
/// are read as they are; integers are converted to float64 exactly, which for int64 means
/// values below 2^53 in magnitude (a larger one is refused, with its place). Any other dtype —
/// bool, float16, other integer widths, complex, strings, objects, big-endian — is refused
/// before anything is read, naming it ([`check_npy_dtype`]).
pub const NPY_DTYPES: &str = "float32, float64, int32, int64 (values below 2^53 in magnitude) or uint8";

/// 2^53: every integer of smaller magnitude converts to float64 exactly.
const EXACT_INT: f64 = 9_007_199_254_740_992.0;

/// The dtype string of a `.npy` header (`<f8`, `|b1`, …), `structured` for a record dtype:
/// read here so that a refused dtype can be named before the header is parsed.
fn npy_descr(head: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(head.get(..head.len().min(npy::MAX_HEADER))?);
    let rest = text[text.find("'descr'")? + "'descr'".len()..].trim_start().strip_prefix(':')?.trim_start();
    match rest.strip_prefix('\'') {
        Some(q) => Some(q.split('\'').next()?.to_string()),
        None => Some("structured".into()),
    }
}

/// A `.npy` dtype string in NumPy's words: `|b1` → `bool`, `>f8` → `big-endian float64`.
fn dtype_name(descr: &str) -> String {
    let (order, code) = match descr.as_bytes().first() {
        Some(b'<' | b'|' | b'=') => ("", &descr[1..]),
        Some(b'>') => ("big-endian ", &descr[1..]),
        _ => ("", descr),
    };
    let (kind, size) = code.split_at(code.len().min(1));
    let bits = size.parse::<u32>().ok().map(|b| b * 8);
    let name = match (kind, bits) {
        ("b", _) => "bool".to_string(),
        ("f", Some(b)) => format!("float{b}"),
        ("i", Some(b)) => format!("int{b}"),
        ("u", Some(b)) => format!("uint{b}"),
        ("c", Some(b)) => format!("complex{b}"),
        ("U", _) => "str (unicode strings)".into(),
        ("S", _) => "bytes (byte strings)".into(),
        ("O", _) => "object (Python objects)".into(),
        ("M", _) => "datetime64".into(),
        ("m", _) => "timedelta64".into(),
        _ => "structured or unknown".into(),
    };
    format!("{order}{name}")
}

/// Refuses a `.npy` dtype outside [`NPY_DTYPES`], naming it and how to convert the array.
pub fn check_npy_dtype(path: &Path, descr: &str) -> anyhow::Result<()> {
    if matches!(descr, "<f4" | "<f8" | "<i4" | "<i8" | "|u1") {
        return Ok(());
    }
    let name = dtype_name(descr);
    let fix = match descr.trim_start_matches(['<', '>', '|', '=']).chars().next() {
        Some('b') => {
            "convert it to numbers first, e.g. np.save(path, x.astype(np.float64)) (false and true become 0 and 1)"
        }
        Some('U' | 'S' | 'O') => "the input must be numbers: parse them, then np.save(path, x.astype(np.float64))",
        Some('c') => {
            "the input must be real numbers: keep the real part (x.real) or split real and imaginary parts into columns"
        }
        _ => "convert it first, e.g. np.save(path, x.astype(np.float64))",
    };
    bail!(
        "{}: dtype {name} ({descr:?}) is not accepted: a .npy input holds {NPY_DTYPES}, little-endian; {fix}",
        path.display()
    )
}

/// Refuses an int64 value that float64 cannot hold exactly; `row` and `col` say where it is.
fn check_int64(path: &Path, v: f64, row: usize, col: usize) -> anyhow::Result<()> {
    ensure!(
        v.abs() < EXACT_INT,
        "{}: the int64 value {v} at row {row}, column {col} has no exact float64 (int64 inputs must be below 2^53 = \
         9007199254740992 in magnitude): scale the data, or convert it yourself (x.astype(np.float64)) if rounding \
         it is acceptable",
        path.display()
    );
    Ok(())
}

/// Reads a whole `.npy` input as float64 under the rules of [`NPY_DTYPES`].
pub fn read_npy(path: &Path) -> anyhow::Result<ArrayD<f64>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if let Some(d) = npy_descr(&bytes) {
        check_npy_dtype(path, &d)?;
    }
    let header = npy::header(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let a = npy::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if header.descr == "<i8" {
        let per_row = a.len() / a.shape().first().copied().unwrap_or(1).max(1);
        for (i, &v) in a.iter().enumerate() {
            check_int64(path, v, i / per_row.max(1), i % per_row.max(1))?;
        }
    }
    Ok(a)
}

/// The input formats.
enum Source {
    Npy { file: BufReader<File>, header: npy::Header },
    Csv { lines: std::io::Lines<BufReader<File>>, line: usize },
}

/// Reads an input file a chunk of rows at a time (see the module docs).
pub struct RowReader {
    path: PathBuf,
    source: Source,
    per_sample: Vec<usize>,
    per_row: usize,
    rows: usize,
    read: usize,
}

impl std::fmt::Debug for RowReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RowReader({}, {} of {} rows read)", self.path.display(), self.read, self.rows)
    }
}

fn per_sample_text(per_sample: &[usize]) -> String {
    per_sample.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
}

impl RowReader {
    /// Opens `path` for rows of `per_sample` values each (`.npy` or `.csv`).
    pub fn open(path: &Path, per_sample: &[usize]) -> anyhow::Result<Self> {
        let per_row: usize = per_sample.iter().product();
        let shown = path.display();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let f = File::open(path).with_context(|| format!("opening {shown}"))?;
        let (source, rows) = match ext {
            "npy" => {
                let mut file = BufReader::new(f);
                let mut head = Vec::with_capacity(4096);
                (&mut file).take(npy::MAX_HEADER as u64).read_to_end(&mut head)?;
                if let Some(d) = npy_descr(&head) {
                    check_npy_dtype(path, &d)?;
                }
                let header = npy::header(&head).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
                ensure!(!header.shape.is_empty() && header.shape[0] > 0, "{shown}: empty input");
                let rows = header.shape[0];
                let width = header.elements() / rows;
                ensure!(
                    width == per_row,
                    "{shown}: input of shape {:?}, the model expects [batch, {}]",
                    header.shape,
                    per_sample_text(per_sample)
                );
                let len = file.get_ref().metadata()?.len();
                let need = header.data_offset as u64 + (header.elements() * header.elem_size) as u64;
                ensure!(
                    len == need,
                    "{shown}: shape {:?} of {} needs {need} bytes, the file has {len}",
                    header.shape,
                    header.descr
                );
                file.seek(SeekFrom::Start(header.data_offset as u64))?;
                (Source::Npy { file, header }, rows)
            }
            "csv" => {
                // Count the data rows first (the output's shape is written before any row).
                let mut rows = 0;
                for (i, l) in BufReader::new(File::open(path)?).lines().enumerate() {
                    let l = l.with_context(|| format!("reading {shown}"))?;
                    if l.trim().is_empty() {
                        continue;
                    }
                    let numeric = l.split(',').all(|c| c.trim().parse::<f64>().is_ok());
                    if i == 0 && !numeric {
                        continue; // header
                    }
                    rows += 1;
                }
                ensure!(rows > 0, "{shown}: no data rows");
                (Source::Csv { lines: BufReader::new(f).lines(), line: 0 }, rows)
            }
            _ => bail!("{shown}: input must be a .npy or .csv file"),
        };
        Ok(RowReader { path: path.to_path_buf(), source, per_sample: per_sample.to_vec(), per_row, rows, read: 0 })
    }

    /// Rows in the file.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The next `n` rows (fewer at the end), shaped `[n, per_sample…]`; `None` when all are read.
    pub fn next(&mut self, n: usize) -> anyhow::Result<Option<ArrayD<f64>>> {
        let n = n.min(self.rows - self.read);
        if n == 0 {
            return Ok(None);
        }
        let shown = self.path.display();
        let mut v = Vec::with_capacity(n * self.per_row);
        match &mut self.source {
            Source::Npy { file, header } => {
                let mut buf = vec![0u8; n * self.per_row * header.elem_size];
                file.read_exact(&mut buf).with_context(|| format!("reading {shown}"))?;
                v.extend(buf.chunks_exact(header.elem_size).map(|c| header.convert(c)));
                if header.descr == "<i8" {
                    for (i, &x) in v.iter().enumerate() {
                        check_int64(&self.path, x, self.read + i / self.per_row.max(1), i % self.per_row.max(1))?;
                    }
                }
            }
            Source::Csv { lines, line } => {
                while v.len() < n * self.per_row {
                    let l = lines.next().with_context(|| format!("{shown}: fewer rows than counted"))??;
                    *line += 1;
                    if l.trim().is_empty() {
                        continue;
                    }
                    let cells: Result<Vec<f64>, _> = l.split(',').map(|c| c.trim().parse::<f64>()).collect();
                    match cells {
                        Ok(r) if r.len() == self.per_row => v.extend(r),
                        Ok(r) => {
                            bail!("{shown}: line {} has {} values, the model takes {}", line, r.len(), self.per_row)
                        }
                        Err(_) if *line == 1 => continue, // header
                        Err(_) => bail!("{shown}: line {} has a cell that is not a number", line),
                    }
                }
            }
        }
        let mut shape = vec![n];
        shape.extend_from_slice(&self.per_sample);
        self.read += n;
        Ok(Some(ArrayD::from_shape_vec(IxDyn(&shape), v)?))
    }
}

/// Reads the whole of `path` once, a chunk at a time, and checks it: rows of `per_sample`
/// values, every value finite and (if given) inside `range`. Returns the number of rows; an
/// error names the first bad row (from 0) and column.
pub fn scan(
    path: &Path,
    per_sample: &[usize],
    range: Option<(f64, f64)>,
    fixed: mpc_proto::FixedPoint,
) -> anyhow::Result<usize> {
    // Values the plan's fixed point can encode: |v| < 2^int_bits.
    let limit = 2f64.powi(fixed.int_bits as i32);
    let mut r = RowReader::open(path, per_sample)?;
    let per_row = r.per_row.max(1);
    let chunk = (1 << 20) / per_row + 1;
    let mut row0 = 0;
    while let Some(a) = r.next(chunk)? {
        for (i, &v) in a.iter().enumerate() {
            let (row, col) = (row0 + i / per_row, i % per_row);
            ensure!(
                v.is_finite(),
                "{}: the value at row {row}, column {col} is {v}: NaN and infinite values are refused",
                path.display()
            );
            if v.abs() >= limit {
                // Integer bits the value needs (sign included): the fractional bits that leave them.
                let need = v.abs().log2().floor() as u32 + 2;
                let fix = match 47u32.checked_sub(need) {
                    Some(f) if f >= 8 => {
                        format!("scale the data, or ask the model owner to publish it with --frac-bits {f} or fewer")
                    }
                    _ => "scale the data: no fixed point of 47 bits holds it with 8 fractional bits".into(),
                };
                bail!(
                    "{}: the value {v} at row {row}, column {col} does not fit the model's fixed point ({} integer \
                     and {} fractional bits: |x| < {limit}): {fix}",
                    path.display(),
                    fixed.int_bits,
                    fixed.frac_bits
                );
            }
            if let Some((lo, hi)) = range
                && !(lo..=hi).contains(&v)
            {
                bail!(
                    "{}: the value {v} at row {row}, column {col} is outside the model's declared input range [{lo}, {hi}]: \
                     scale the data as the model expects, or ask the model owner to publish it with a wider --input-range",
                    path.display()
                );
            }
        }
        row0 += a.shape()[0];
    }
    Ok(r.rows())
}

/// Output formats.
enum Sink {
    Npy,
    Csv,
}

/// Writes an output file row by row, to `<path>.partial` until [`RowWriter::finish`] (see the
/// module docs). Dropped unfinished, it removes the partial file.
pub struct RowWriter {
    path: PathBuf,
    partial: PathBuf,
    file: Option<BufWriter<File>>,
    sink: Sink,
    rows: usize,
    per_row: usize,
    written: usize,
}

impl std::fmt::Debug for RowWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RowWriter({}, {} of {} rows)", self.path.display(), self.written, self.rows)
    }
}

/// Bytes free for an unprivileged writer on the file system holding `dir`.
fn free_bytes(dir: &Path) -> anyhow::Result<u64> {
    let s = rustix::fs::statvfs(dir).with_context(|| format!("free space of {}", dir.display()))?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

impl RowWriter {
    /// Starts `path` for `rows` rows of shape `per_sample` (`.npy` or `.csv`); checks that the
    /// whole output fits on the file system first.
    pub fn create(path: &Path, rows: usize, per_sample: &[usize]) -> anyhow::Result<Self> {
        let per_row: usize = per_sample.iter().product();
        let sink = match path.extension().and_then(|e| e.to_str()) {
            Some("npy") => Sink::Npy,
            Some("csv") => Sink::Csv,
            _ => bail!("{}: output must end in .npy or .csv", path.display()),
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        ensure!(dir.is_dir(), "the output's directory {} does not exist", dir.display());
        // .npy: 8 bytes a value; .csv: up to ~25 characters a value.
        let need = (rows * per_row) as u64 * if matches!(sink, Sink::Npy) { 8 } else { 25 } + 4096;
        let free = free_bytes(&dir)?;
        ensure!(
            need <= free,
            "the output needs about {} MiB and {} has {} MiB free: free some space or write elsewhere",
            need >> 20,
            dir.display(),
            free >> 20
        );
        let mut name = path.file_name().context("an output file name")?.to_os_string();
        name.push(".partial");
        let partial = path.with_file_name(name);
        let file = File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
        let mut w = RowWriter {
            path: path.to_path_buf(),
            partial,
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            sink,
            rows,
            per_row,
            written: 0,
        };
        if let Sink::Npy = w.sink {
            let mut shape = vec![rows];
            shape.extend_from_slice(per_sample);
            w.out().write_all(&npy::header_bytes(&shape))?;
        }
        Ok(w)
    }

    fn out(&mut self) -> &mut BufWriter<File> {
        self.file.as_mut().expect("open until finished")
    }

    /// Appends the rows of `a` (`[n, per_sample…]`).
    pub fn write(&mut self, a: &ArrayD<f64>) -> anyhow::Result<()> {
        let n = a.shape().first().copied().unwrap_or(0);
        ensure!(
            a.len() == n * self.per_row,
            "rows of {} values, the output takes {}",
            a.len() / n.max(1),
            self.per_row
        );
        ensure!(self.written + n <= self.rows, "more rows than the output's {}", self.rows);
        let std = a.as_standard_layout();
        let values = std.as_slice().expect("standard layout");
        let shown = self.partial.display().to_string();
        match self.sink {
            Sink::Npy => {
                let mut bytes = Vec::with_capacity(8 * values.len());
                values.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
                self.out().write_all(&bytes).with_context(|| format!("writing {shown}"))?;
            }
            Sink::Csv => {
                let mut s = String::new();
                for row in values.chunks(self.per_row.max(1)) {
                    s.push_str(&row.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(","));
                    s.push('\n');
                }
                self.out().write_all(s.as_bytes()).with_context(|| format!("writing {shown}"))?;
            }
        }
        self.written += n;
        Ok(())
    }

    /// Rows written so far.
    pub fn written(&self) -> usize {
        self.written
    }

    /// Every row written: syncs the file and renames it to the output path.
    pub fn finish(mut self) -> anyhow::Result<()> {
        ensure!(self.written == self.rows, "{} of {} rows written", self.written, self.rows);
        let file = self.file.take().expect("open until finished");
        let file = file
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing {}", self.partial.display()))?;
        file.sync_all()?;
        std::fs::rename(&self.partial, &self.path)
            .with_context(|| format!("renaming {} to {}", self.partial.display(), self.path.display()))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(d) = File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Drop for RowWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arr(rows: usize, per: usize, f: impl Fn(usize) -> f64) -> ArrayD<f64> {
        ArrayD::from_shape_vec(IxDyn(&[rows, per]), (0..rows * per).map(f).collect()).unwrap()
    }

    #[test]
    fn chunks_of_an_npy_and_a_csv_file_equal_the_whole() {
        let fx = mpc_proto::FixedPoint::default();
        let dir = tempfile::tempdir().unwrap();
        let a = arr(10, 6, |i| i as f64 * 0.5 - 7.0);
        let npy_path = dir.path().join("x.npy");
        npy::write(&npy_path, &a).unwrap();
        let csv_path = dir.path().join("x.csv");
        let mut text = "a,b,c,d,e,f\n".to_string();
        for r in a.outer_iter() {
            text += &r.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",");
            text += "\n\n";
        }
        std::fs::write(&csv_path, text).unwrap();
        for p in [&npy_path, &csv_path] {
            let mut r = RowReader::open(p, &[2, 3]).unwrap();
            assert_eq!(r.rows(), 10);
            let mut all = vec![];
            while let Some(c) = r.next(4).unwrap() {
                assert_eq!(&c.shape()[1..], &[2, 3]);
                all.extend(c.iter().copied());
            }
            assert_eq!(all, a.iter().copied().collect::<Vec<_>>(), "{}", p.display());
            assert_eq!(scan(p, &[6], Some((-7.0, 22.5)), fx).unwrap(), 10);
            let e = scan(p, &[6], Some((-7.0, 20.0)), fx).unwrap_err().to_string();
            assert!(e.contains("row 9, column 1") && e.contains("declared input range"), "{e}");
        }
        assert!(RowReader::open(&npy_path, &[5]).unwrap_err().to_string().contains("expects [batch, 5]"));
        std::fs::write(&csv_path, "1,2\n3,nan\n").unwrap();
        assert!(scan(&csv_path, &[2], None, fx).unwrap_err().to_string().contains("row 1, column 1"));
        // A value the fixed point cannot hold is refused with its place and a fix.
        std::fs::write(&csv_path, "1,2\n3,1e30\n").unwrap();
        let e = scan(&csv_path, &[2], None, fx).unwrap_err().to_string();
        assert!(e.contains("row 1, column 1") && e.contains("scale the data: no fixed point"), "{e}");
        std::fs::write(&csv_path, "1,2\n3,-5e9\n").unwrap();
        let e = scan(&csv_path, &[2], None, fx).unwrap_err().to_string();
        assert!(e.contains("-5000000000") && e.contains("--frac-bits 13 or fewer"), "{e}");
        let wide = mpc_proto::FixedPoint::new(13, 34).unwrap();
        assert_eq!(scan(&csv_path, &[2], None, wide).unwrap(), 2);
    }

    /// A `.npy` file of `shape` with dtype `descr` and raw little-endian `data`.
    fn raw_npy(path: &Path, descr: &str, shape: &[usize], data: &[u8]) {
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let shape = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
        let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        b.extend_from_slice(h.as_bytes());
        b.extend_from_slice(data);
        std::fs::write(path, b).unwrap();
    }

    #[test]
    fn npy_dtypes_integers_convert_exactly_and_others_are_refused_by_name() {
        let fx = mpc_proto::FixedPoint::default();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        let read_all = |p: &Path| -> anyhow::Result<Vec<f64>> {
            let mut r = RowReader::open(p, &[3])?;
            let mut v = vec![];
            while let Some(c) = r.next(1)? {
                v.extend(c.iter().copied());
            }
            Ok(v)
        };
        // Accepted: the floats, int32, uint8, and int64 below 2^53 — converted exactly.
        let ints: Vec<i64> = vec![-3, 0, 7, (1 << 53) - 1, -((1 << 53) - 1), 1_000_000];
        let cases: Vec<(&str, Vec<u8>, Vec<f64>)> = vec![
            (
                "<f8",
                [1.5f64, -2.0, 0.25, 3.0, 4.0, 5.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
                vec![1.5, -2.0, 0.25, 3.0, 4.0, 5.0],
            ),
            (
                "<f4",
                [1.5f32, -2.0, 0.25, 3.0, 4.0, 5.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
                vec![1.5, -2.0, 0.25, 3.0, 4.0, 5.0],
            ),
            (
                "<i4",
                [-7i32, 0, 7, 100, -100, 2_000_000_000].iter().flat_map(|v| v.to_le_bytes()).collect(),
                vec![-7.0, 0.0, 7.0, 100.0, -100.0, 2e9],
            ),
            ("|u1", vec![0, 1, 2, 253, 254, 255], vec![0.0, 1.0, 2.0, 253.0, 254.0, 255.0]),
            ("<i8", ints.iter().flat_map(|v| v.to_le_bytes()).collect(), ints.iter().map(|&v| v as f64).collect()),
        ];
        for (descr, data, want) in cases {
            raw_npy(&p, descr, &[2, 3], &data);
            assert_eq!(read_all(&p).unwrap(), want, "{descr}");
            assert_eq!(read_npy(&p).unwrap().iter().copied().collect::<Vec<_>>(), want, "{descr}");
            if descr != "<i8" && descr != "<i4" {
                assert_eq!(scan(&p, &[3], None, fx).unwrap(), 2, "{descr}");
            }
        }
        // int64 at 2^53 and beyond has no exact float64: refused where it is, before the job.
        for bad in [1i64 << 53, -(1i64 << 53), i64::MAX] {
            let data: Vec<u8> = [1i64, 2, 3, 4, bad, 6].iter().flat_map(|v| v.to_le_bytes()).collect();
            raw_npy(&p, "<i8", &[2, 3], &data);
            for e in [read_all(&p).unwrap_err(), read_npy(&p).unwrap_err(), scan(&p, &[3], None, fx).unwrap_err()] {
                let e = e.to_string();
                assert!(e.contains("int64 value") && e.contains("row 1, column 1") && e.contains("2^53"), "{e}");
            }
        }
        // Refused, named in NumPy's words, with the accepted list and a conversion.
        for (descr, name, size) in [
            ("|b1", "dtype bool", 1),
            ("<f2", "dtype float16", 2),
            ("<i2", "dtype int16", 2),
            ("|i1", "dtype int8", 1),
            ("<u8", "dtype uint64", 8),
            ("<c16", "dtype complex128", 16),
            ("|O", "dtype object (Python objects)", 8),
            ("<U3", "dtype str (unicode strings)", 12),
            ("|S4", "dtype bytes (byte strings)", 4),
            (">f8", "dtype big-endian float64", 8),
            (">i4", "dtype big-endian int32", 4),
        ] {
            raw_npy(&p, descr, &[2, 3], &vec![0u8; 6 * size]);
            for e in [
                RowReader::open(&p, &[3]).unwrap_err(),
                read_npy(&p).unwrap_err(),
                scan(&p, &[3], None, fx).unwrap_err(),
            ] {
                let e = e.to_string();
                assert!(e.contains(name) && e.contains(&format!("{descr:?}")), "{descr}: {e}");
                assert!(e.contains(NPY_DTYPES), "{descr}: {e}");
                assert!(e.contains("np.save(") || e.contains("real part"), "{descr}: {e}");
            }
        }
    }

    #[test]
    fn an_output_appears_only_complete() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["y.npy", "y.csv"] {
            let path = dir.path().join(name);
            let mut w = RowWriter::create(&path, 5, &[3]).unwrap();
            w.write(&arr(2, 3, |i| i as f64)).unwrap();
            assert!(!path.exists(), "nothing at the output path before the last row");
            w.write(&arr(3, 3, |i| (i + 6) as f64)).unwrap();
            w.finish().unwrap();
            let got: Vec<f64> = match name {
                "y.npy" => npy::read(&path).unwrap().iter().copied().collect(),
                _ => std::fs::read_to_string(&path)
                    .unwrap()
                    .split([',', '\n'])
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().unwrap())
                    .collect(),
            };
            assert_eq!(got, (0..15).map(|i| i as f64).collect::<Vec<_>>());
            // Dropped midway: the partial file goes, nothing appears.
            let other = dir.path().join(format!("z-{name}"));
            let mut w = RowWriter::create(&other, 5, &[3]).unwrap();
            w.write(&arr(2, 3, |i| i as f64)).unwrap();
            drop(w);
            assert!(!other.exists());
            assert_eq!(
                std::fs::read_dir(dir.path())
                    .unwrap()
                    .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains("partial"))
                    .count(),
                0
            );
        }
        assert!(RowWriter::create(&dir.path().join("nodir/y.npy"), 1, &[1]).is_err());
        assert!(RowWriter::create(&dir.path().join("y.txt"), 1, &[1]).is_err());
    }
}
