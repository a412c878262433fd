//! Summary and description templates: the part of Prometheus's Go templates that
//! rules here use, `{{ $labels.NAME }}` and `{{ $value }}`, rendered as Prometheus
//! renders them (a missing label is empty; `$value` as Go prints a float64).

use std::collections::BTreeMap;

use super::expr::ExprError;

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Label(String),
    Value,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses a template; an unsupported action is an error at its column.
    pub fn parse(text: &str) -> Result<Template, ExprError> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        let column = |offset: usize| text[..offset].chars().count() + 1;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let action_start = offset + open;
            let Some(close) = rest[open..].find("}}") else {
                return Err(ExprError {
                    column: column(action_start),
                    message: "{{ without }}".into(),
                });
            };
            let action = rest[open + 2..open + close].trim();
            let part = if action == "$value" {
                Part::Value
            } else if let Some(name) = action.strip_prefix("$labels.")
                && !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                Part::Label(name.to_string())
            } else {
                return Err(ExprError {
                    column: column(action_start),
                    message: format!(
                        "unsupported template action {{{{ {action} }}}}: only {{{{ $labels.NAME }}}} and {{{{ $value }}}}"
                    ),
                });
            };
            parts.push(part);
            let consumed = open + close + 2;
            offset += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// The text for one alert.
    pub fn render(&self, labels: &BTreeMap<String, String>, value: f64) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Label(name) => {
                    if let Some(v) = labels.get(name) {
                        out.push_str(v);
                    }
                }
                Part::Value => out.push_str(&go_float(value)),
            }
        }
        out
    }
}

/// A float64 as Go's `fmt.Sprint` prints it (`%v`: shortest representation, with an
/// exponent below 1e-4 and from 1e21).
pub fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let abs = v.abs();
    if abs != 0.0 && !(1e-4..1e21).contains(&abs) {
        // Rust's `{:e}` is `1e-5`; Go's is `1e-05`.
        let s = format!("{v:e}");
        if let Some((mantissa, exp)) = s.split_once('e') {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            return format!("{mantissa}e{sign}{digits:0>2}");
        }
        return s;
    }
    format!("{v}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labels_and_value() {
        let t =
            Template::parse("Disk {{ $labels.mountpoint }} is {{$value}}% full{{ $labels.nope }}.")
                .expect("parse");
        let labels = BTreeMap::from([("mountpoint".to_string(), "/".to_string())]);
        assert_eq!(t.render(&labels, 91.5), "Disk / is 91.5% full.");
        assert_eq!(t.render(&labels, 95.0), "Disk / is 95% full.");
        assert_eq!(
            Template::parse("plain").expect("p").render(&labels, 0.0),
            "plain"
        );
    }

    #[test]
    fn rejects_unsupported_actions_with_column() {
        let e = Template::parse("é {{ humanize $value }}").expect_err("unsupported");
        assert_eq!(e.column, 3);
        assert!(e.message.contains("unsupported"), "{}", e.message);
        assert_eq!(Template::parse("x {{ $value").expect_err("open").column, 3);
        assert!(Template::parse("{{ $labels. }}").is_err());
    }

    #[test]
    fn floats_print_as_go_does() {
        assert_eq!(go_float(81.25), "81.25");
        assert_eq!(go_float(0.0), "0");
        assert_eq!(go_float(1e-5), "1e-05");
        assert_eq!(go_float(2.5e21), "2.5e+21");
        assert_eq!(go_float(1e20), "100000000000000000000");
        assert_eq!(go_float(f64::NAN), "NaN");
    }
}
