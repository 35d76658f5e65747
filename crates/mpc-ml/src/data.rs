//! Tabular data: CSV loading with errors that name the row and column, train/test splits and
//! standardisation.

use std::path::Path;

use ndarray::{Array1, Array2, Axis};

/// A data file that cannot be used. Names the file, row (1-based, header = row 1) and column.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The label column is not in the header.
    #[error("{path}: no column named {label:?} (columns: {columns})")]
    NoLabel {
        /// The file.
        path: String,
        /// The requested label column.
        label: String,
        /// The header's columns.
        columns: String,
    },
    /// A cell is empty or not a number.
    #[error("{path}: row {row}, column {column:?}: {problem}")]
    Cell {
        /// The file.
        path: String,
        /// 1-based row (the header is row 1).
        row: usize,
        /// Column name.
        column: String,
        /// What is wrong.
        problem: String,
    },
    /// A row has the wrong number of cells, or the file has no data.
    #[error("{path}: {problem}")]
    Shape {
        /// The file.
        path: String,
        /// What is wrong.
        problem: String,
    },
}

/// Features, labels and names read from a CSV file.
#[derive(Clone, Debug)]
pub struct Table {
    /// Feature matrix `[rows, features]`.
    pub x: Array2<f64>,
    /// Label column.
    pub y: Array1<f64>,
    /// Feature column names.
    pub features: Vec<String>,
}

/// Reads a CSV file with a header row; `label` names the label column, every other column is a
/// feature. Every cell must be a finite number.
pub fn load_csv(path: &Path, label: &str) -> Result<Table, DataError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io { path: p.clone(), source })?;
    parse_csv(&p, &text, label)
}

/// [`load_csv`] on text already in memory (`name` is used in errors).
pub fn parse_csv(name: &str, text: &str, label: &str) -> Result<Table, DataError> {
    let (cols, m) = parse_matrix(name, text)?;
    let li = cols.iter().position(|c| c == label).ok_or_else(|| DataError::NoLabel {
        path: name.into(),
        label: label.into(),
        columns: cols.join(", "),
    })?;
    let keep: Vec<usize> = (0..cols.len()).filter(|&j| j != li).collect();
    Ok(Table {
        x: m.select(Axis(1), &keep),
        y: m.column(li).to_owned(),
        features: keep.iter().map(|&j| cols[j].clone()).collect(),
    })
}

/// Reads a CSV file with a header row in which every column is numeric: the column names and
/// the `[rows, columns]` matrix. Errors name the row and column.
pub fn load_matrix(path: &Path) -> Result<(Vec<String>, Array2<f64>), DataError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io { path: p.clone(), source })?;
    parse_matrix(&p, &text)
}

/// [`load_matrix`] on text already in memory (`name` is used in errors).
pub fn parse_matrix(name: &str, text: &str) -> Result<(Vec<String>, Array2<f64>), DataError> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, header) =
        lines.next().ok_or_else(|| DataError::Shape { path: name.into(), problem: "empty file".into() })?;
    let cols: Vec<String> = header.split(',').map(|c| c.trim().trim_matches('"').to_string()).collect();
    if let Some(j) = cols.iter().position(|c| c.is_empty()) {
        return Err(DataError::Shape { path: name.into(), problem: format!("header column {} has no name", j + 1) });
    }
    let mut xs = Vec::new();
    let mut rows = 0;
    for (i, line) in lines {
        let cells: Vec<&str> = line.split(',').collect();
        if cells.len() != cols.len() {
            return Err(DataError::Shape {
                path: name.into(),
                problem: format!("row {} has {} cells, the header has {}", i + 1, cells.len(), cols.len()),
            });
        }
        for (j, cell) in cells.iter().enumerate() {
            let c = cell.trim().trim_matches('"');
            let bad =
                |problem: String| DataError::Cell { path: name.into(), row: i + 1, column: cols[j].clone(), problem };
            if c.is_empty() || c.eq_ignore_ascii_case("na") || c.eq_ignore_ascii_case("nan") {
                return Err(bad("missing value".into()));
            }
            let v: f64 = c.parse().map_err(|_| bad(format!("{c:?} is not a number")))?;
            if !v.is_finite() {
                return Err(bad(format!("{c:?} is not finite")));
            }
            xs.push(v);
        }
        rows += 1;
    }
    if rows == 0 {
        return Err(DataError::Shape { path: name.into(), problem: "no data rows".into() });
    }
    let m = Array2::from_shape_vec((rows, cols.len()), xs).expect("row lengths checked");
    Ok((cols, m))
}

/// Splits rows into train and test sets by a seeded shuffle; `test` is the test fraction.
pub fn split(t: &Table, test: f64, seed: u64) -> (Table, Table) {
    let n = t.x.nrows();
    let mut idx: Vec<usize> = (0..n).collect();
    let mut g = mpc_proto::prg::Prg::from_u64(seed);
    for i in (1..n).rev() {
        idx.swap(i, (g.next_u64() % (i as u64 + 1)) as usize);
    }
    let n_test = ((n as f64) * test).round() as usize;
    let (te, tr) = idx.split_at(n_test);
    let take = |rows: &[usize]| Table {
        x: t.x.select(Axis(0), rows),
        y: t.y.select(Axis(0), rows),
        features: t.features.clone(),
    };
    (take(tr), take(te))
}

/// Per-feature standardisation `(x − mean) / std` fitted on one set and applied to others.
#[derive(Clone, Debug, PartialEq)]
pub struct Standardizer {
    /// Feature means.
    pub mean: Array1<f64>,
    /// Feature standard deviations (1 where a feature is constant).
    pub std: Array1<f64>,
}

impl Standardizer {
    /// Fits on `x`.
    pub fn fit(x: &Array2<f64>) -> Self {
        let mean = x.mean_axis(Axis(0)).expect("non-empty");
        let std = x.std_axis(Axis(0), 0.0).mapv(|s| if s > 1e-12 { s } else { 1.0 });
        Self { mean, std }
    }

    /// Applies to `x`.
    pub fn apply(&self, x: &Array2<f64>) -> Array2<f64> {
        (x - &self.mean) / &self.std
    }

    /// Folds the standardisation into a model whose first layer is linear, so that the model
    /// takes raw features: `W' = diag(1/σ)·W`, `b' = b − (μ/σ)·W`. Used before exporting a
    /// model trained on standardised data.
    pub fn fold_into(&self, model: &mut crate::Model) -> Result<(), crate::ModelError> {
        let Some(layer) = model.layers.first_mut().filter(|l| matches!(l.op, crate::Op::Linear(_))) else {
            return Err(crate::ModelError::Invalid("the first layer is not linear".into()));
        };
        let w = layer.weights[0]
            .view()
            .into_dimensionality::<ndarray::Ix2>()
            .map_err(|e| crate::ModelError::Invalid(e.to_string()))?
            .to_owned();
        if w.nrows() != self.mean.len() {
            return Err(crate::ModelError::Invalid(format!(
                "{} standardised features, the model takes {}",
                self.mean.len(),
                w.nrows()
            )));
        }
        let scaled = &w / &self.std.view().insert_axis(Axis(1));
        let shift = (&self.mean / &self.std).dot(&w);
        let b = match layer.take_bias() {
            Some(b) => {
                b.into_dimensionality::<ndarray::Ix1>().map_err(|e| crate::ModelError::Invalid(e.to_string()))?
            }
            None => Array1::zeros(w.ncols()),
        };
        layer.weights[0] = scaled.into_dyn();
        layer.set_bias((b - shift).into_dyn());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_row_and_column() {
        let e = parse_csv("t.csv", "a,b,y\n1,2,0\n3,,1\n", "y").unwrap_err().to_string();
        assert_eq!(e, "t.csv: row 3, column \"b\": missing value");
        let e = parse_csv("t.csv", "a,b,y\n1,2,0\n3,x4,1\n", "y").unwrap_err().to_string();
        assert_eq!(e, "t.csv: row 3, column \"b\": \"x4\" is not a number");
        let e = parse_csv("t.csv", "a,b,y\n1,2,0\n", "label").unwrap_err().to_string();
        assert!(e.contains("no column named \"label\" (columns: a, b, y)"), "{e}");
        let e = parse_csv("t.csv", "a,b,y\n1,2\n", "y").unwrap_err().to_string();
        assert!(e.contains("row 2 has 2 cells, the header has 3"), "{e}");
        assert!(parse_csv("t.csv", "a,b,y\n", "y").is_err());
        let t = parse_csv("t.csv", "a,y,b\n1,0,2\n3,1,4\n", "y").unwrap();
        assert_eq!(t.x, ndarray::array![[1.0, 2.0], [3.0, 4.0]]);
        assert_eq!(t.features, ["a", "b"]);
    }
}
