//! Medians, spreads and a small JSON writer (the workspace carries no serde).

use std::fmt::Write as _;

/// A JSON value.
#[derive(Clone, Debug)]
pub enum Json {
    /// A number (non-finite numbers are written as null).
    Num(f64),
    /// A string.
    Str(String),
    /// A boolean.
    Bool(bool),
    /// null.
    Null,
    /// An array.
    Arr(Vec<Json>),
    /// An object, in insertion order.
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// An empty object.
    pub fn obj() -> Self {
        Json::Obj(Vec::new())
    }

    /// Adds (or replaces) `k` in an object.
    pub fn set(&mut self, k: &str, v: impl Into<Json>) -> &mut Self {
        if let Json::Obj(m) = self {
            let v = v.into();
            if let Some(e) = m.iter_mut().find(|(key, _)| key == k) {
                e.1 = v;
            } else {
                m.push((k.to_string(), v));
            }
        }
        self
    }

    /// The value of `k` in an object.
    pub fn get(&self, k: &str) -> Option<&Json> {
        match self {
            Json::Obj(m) => m.iter().find(|(key, _)| key == k).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Writes it, indented.
    pub fn render(&self) -> String {
        let mut s = String::new();
        self.write(&mut s, 0);
        s.push('\n');
        s
    }

    fn write(&self, s: &mut String, ind: usize) {
        match self {
            Json::Num(x) if x.is_finite() => {
                if x.fract() == 0.0 && x.abs() < 1e15 {
                    let _ = write!(s, "{}", *x as i64);
                } else {
                    let _ = write!(s, "{}", (x * 1e4).round() / 1e4);
                }
            }
            Json::Num(_) | Json::Null => s.push_str("null"),
            Json::Bool(b) => s.push_str(if *b { "true" } else { "false" }),
            Json::Str(t) => {
                s.push('"');
                for c in t.chars() {
                    match c {
                        '"' => s.push_str("\\\""),
                        '\\' => s.push_str("\\\\"),
                        '\n' => s.push_str("\\n"),
                        c if (c as u32) < 0x20 => {
                            let _ = write!(s, "\\u{:04x}", c as u32);
                        }
                        c => s.push(c),
                    }
                }
                s.push('"');
            }
            Json::Arr(v) => {
                // Arrays of plain numbers on one line.
                if v.iter().all(|x| matches!(x, Json::Num(_))) {
                    s.push('[');
                    for (i, x) in v.iter().enumerate() {
                        if i > 0 {
                            s.push_str(", ");
                        }
                        x.write(s, ind);
                    }
                    s.push(']');
                    return;
                }
                s.push_str("[\n");
                for (i, x) in v.iter().enumerate() {
                    s.push_str(&" ".repeat(ind + 2));
                    x.write(s, ind + 2);
                    s.push_str(if i + 1 < v.len() { ",\n" } else { "\n" });
                }
                s.push_str(&" ".repeat(ind));
                s.push(']');
            }
            Json::Obj(m) => {
                s.push_str("{\n");
                for (i, (k, x)) in m.iter().enumerate() {
                    s.push_str(&" ".repeat(ind + 2));
                    Json::Str(k.clone()).write(s, ind + 2);
                    s.push_str(": ");
                    x.write(s, ind + 2);
                    s.push_str(if i + 1 < m.len() { ",\n" } else { "\n" });
                }
                s.push_str(&" ".repeat(ind));
                s.push('}');
            }
        }
    }
}

impl From<f64> for Json {
    fn from(x: f64) -> Self {
        Json::Num(x)
    }
}

impl From<u64> for Json {
    fn from(x: u64) -> Self {
        Json::Num(x as f64)
    }
}

impl From<usize> for Json {
    fn from(x: usize) -> Self {
        Json::Num(x as f64)
    }
}

impl From<bool> for Json {
    fn from(x: bool) -> Self {
        Json::Bool(x)
    }
}

impl From<&str> for Json {
    fn from(x: &str) -> Self {
        Json::Str(x.to_string())
    }
}

impl From<String> for Json {
    fn from(x: String) -> Self {
        Json::Str(x)
    }
}

impl From<Option<f64>> for Json {
    fn from(x: Option<f64>) -> Self {
        x.map_or(Json::Null, Json::Num)
    }
}

impl From<&[f64]> for Json {
    fn from(v: &[f64]) -> Self {
        Json::Arr(v.iter().map(|&x| Json::Num(x)).collect())
    }
}

/// Runs of one measurement.
#[derive(Clone, Debug, Default)]
pub struct Runs(pub Vec<f64>);

impl Runs {
    /// Median (NaN when empty).
    pub fn median(&self) -> f64 {
        let mut v = self.0.clone();
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }

    /// Smallest run.
    pub fn min(&self) -> f64 {
        self.0.iter().copied().fold(f64::NAN, f64::min)
    }

    /// Largest run.
    pub fn max(&self) -> f64 {
        self.0.iter().copied().fold(f64::NAN, f64::max)
    }

    /// (max - min) / median, in percent.
    pub fn spread_pct(&self) -> f64 {
        (self.max() - self.min()) / self.median() * 100.0
    }

    /// {"median","min","max","spread_pct","runs"}.
    pub fn json(&self) -> Json {
        let mut o = Json::obj();
        o.set("median", self.median())
            .set("min", self.min())
            .set("max", self.max())
            .set("spread_pct", self.spread_pct())
            .set("runs", &self.0[..]);
        o
    }

    /// "12.34 [12.0-12.9]".
    pub fn show(&self) -> String {
        if self.0.is_empty() {
            return "-".into();
        }
        format!("{:.3} [{:.3}-{:.3}]", self.median(), self.min(), self.max())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(Runs(vec![3.0, 1.0, 2.0]).median(), 2.0);
        assert_eq!(Runs(vec![4.0, 1.0, 2.0, 3.0]).median(), 2.5);
        assert!(Runs(vec![]).median().is_nan());
        let r = Runs(vec![9.0, 10.0, 11.0]);
        assert_eq!((r.min(), r.max()), (9.0, 11.0));
        assert!((r.spread_pct() - 20.0).abs() < 1e-9);
    }

    #[test]
    fn json_text() {
        let mut o = Json::obj();
        o.set("a", 1.5).set("b", "x\"y").set("c", &[1.0, 2.0][..]);
        let mut inner = Json::obj();
        inner.set("n", f64::NAN).set("t", true);
        o.set("d", inner);
        assert_eq!(
            o.render(),
            "{\n  \"a\": 1.5,\n  \"b\": \"x\\\"y\",\n  \"c\": [1, 2],\n  \"d\": {\n    \"n\": null,\n    \"t\": true\n  }\n}\n"
        );
    }
}
