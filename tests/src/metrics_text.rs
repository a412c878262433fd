//! A small reader of the text exposition format for assertions (values by series).

use std::collections::BTreeMap;

/// One sample: the series (name and labels as rendered) and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Name with labels, e.g. `node_load1` or `node_cpu_seconds_total{cpu="0",mode="idle"}`.
    pub series: String,
    /// The value.
    pub value: f64,
}

/// Samples by series. Comment lines are skipped; labels are kept as rendered (both
/// node_exporter and nodewatch sort them by name).
pub fn parse_samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = split_sample(l)?;
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                "NaN" => f64::NAN,
                v => v.parse().ok()?,
            };
            Some((series.to_string(), value))
        })
        .collect()
}

/// Splits a sample line into series and value, ignoring a trailing timestamp.
fn split_sample(line: &str) -> Option<(&str, &str)> {
    let end_of_series = match line.rfind('}') {
        Some(i) => i + 1,
        None => line.find(' ')?,
    };
    let series = &line[..end_of_series];
    let value = line[end_of_series..].split_whitespace().next()?;
    Some((series, value))
}

/// The family name of a series (`name{...}` → `name`).
pub fn family_of(series: &str) -> &str {
    series.split('{').next().unwrap_or(series)
}

/// `# TYPE` lines: family → type.
pub fn types(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.strip_prefix("# TYPE ")?.split_whitespace();
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_samples() {
        let s = parse_samples("# HELP a x\na 1\nb{c=\"d e\"} 2.5e+06\nc +Inf\n");
        assert_eq!(s["a"], 1.0);
        assert_eq!(s["b{c=\"d e\"}"], 2.5e6);
        assert!(s["c"].is_infinite());
    }
}
