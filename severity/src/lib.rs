//! nodewatch-severity: how urgent an alert is, one type for every part of nodewatch.
//!
//! The agent's alert rules, the LoRa frame and the OLED's view model all speak of the
//! same three levels, ordered `Info < Warning < Critical`. Each part keeps its own
//! encoding at its edge (the LoRa frame's nibble lives in `nodewatch-lora`); the
//! spelling (`info`, `warning`, `critical`) is the same everywhere: in the config,
//! in JSON, and as the `severity` label.

#![deny(missing_docs)]

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How urgent an alert is. Ordered: `Info < Warning < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// For information.
    Info,
    /// Needs attention soon.
    Warning,
    /// Needs attention now.
    Critical,
}

impl Severity {
    /// Every severity, least urgent first.
    pub const ALL: [Severity; 3] = [Severity::Info, Severity::Warning, Severity::Critical];

    /// The label value: `info`, `warning`, `critical`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text that names no severity (see [`Severity`]'s [`FromStr`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseSeverityError {
    text: String,
}

impl ParseSeverityError {
    /// The text that was not a severity.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for ParseSeverityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "severity {:?} is not one of info, warning, critical",
            self.text
        )
    }
}

impl std::error::Error for ParseSeverityError {}

impl FromStr for Severity {
    type Err = ParseSeverityError;

    /// `info`, `warning` or `critical`, in any case (`Critical` too: a hand-written
    /// flag or label is not refused for its capital).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Severity::ALL
            .into_iter()
            .find(|severity| severity.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| ParseSeverityError { text: s.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_from_info_to_critical() {
        assert!(Severity::Info < Severity::Warning && Severity::Warning < Severity::Critical);
        let mut shuffled = [Severity::Critical, Severity::Info, Severity::Warning];
        shuffled.sort();
        assert_eq!(shuffled, Severity::ALL);
    }

    #[test]
    fn names_round_trip_through_display_and_from_str() {
        for severity in Severity::ALL {
            assert_eq!(severity.to_string(), severity.as_str());
            assert_eq!(severity.as_str().parse::<Severity>(), Ok(severity));
        }
        assert_eq!("Critical".parse::<Severity>(), Ok(Severity::Critical));
        assert_eq!("WARNING".parse::<Severity>(), Ok(Severity::Warning));
    }

    #[test]
    fn an_unknown_name_is_an_error_naming_it() {
        let err = "page".parse::<Severity>().expect_err("not a severity");
        assert_eq!(err.text(), "page");
        assert_eq!(
            err.to_string(),
            "severity \"page\" is not one of info, warning, critical"
        );
        assert!("".parse::<Severity>().is_err());
        assert!(" info".parse::<Severity>().is_err());
    }

    #[test]
    fn serde_spells_the_names_in_lowercase() {
        for severity in Severity::ALL {
            let json = serde_json::to_string(&severity).expect("serialises");
            assert_eq!(json, format!("\"{}\"", severity.as_str()));
            assert_eq!(
                serde_json::from_str::<Severity>(&json).expect("deserialises"),
                severity
            );
        }
        // serde is exact, as the config and JSON formats always were.
        assert!(serde_json::from_str::<Severity>("\"Critical\"").is_err());
        assert!(serde_json::from_str::<Severity>("\"page\"").is_err());
    }
}
