//! Whether a server would write bind parameters (the HMAC pads) to its log.

/// The settings that decide whether PostgreSQL writes bind parameters to its log.
#[derive(Debug, Default, Clone)]
pub(super) struct ParameterLogging {
    pub(super) log_statement: Option<String>,
    pub(super) log_min_duration_statement: Option<String>,
    pub(super) log_min_duration_sample: Option<String>,
    pub(super) log_parameter_max_length: Option<String>,
    pub(super) log_parameter_max_length_on_error: Option<String>,
    pub(super) pgaudit_log_parameter: Option<String>,
}

impl ParameterLogging {
    /// Why a statement's parameters would reach the server log, if they would.
    pub(super) fn would_log_parameters(&self) -> Option<String> {
        let is = |v: &Option<String>, x: &str| v.as_deref().map(str::trim) == Some(x);
        let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty() && s != "-1");
        if is(&self.pgaudit_log_parameter, "on") {
            return Some("pgaudit.log_parameter = on".into());
        }
        // An error's statement is logged with its parameters unless this is 0 (the default).
        if !is(&self.log_parameter_max_length_on_error, "0")
            && self.log_parameter_max_length_on_error.is_some()
        {
            return Some(format!(
                "log_parameter_max_length_on_error = {}",
                self.log_parameter_max_length_on_error
                    .as_deref()
                    .unwrap_or("")
            ));
        }
        if is(&self.log_parameter_max_length, "0") {
            return None;
        }
        if matches!(self.log_statement.as_deref(), Some("mod" | "all")) {
            return Some(format!(
                "log_statement = {}",
                self.log_statement.as_deref().unwrap_or("")
            ));
        }
        if set(&self.log_min_duration_statement) {
            return Some(format!(
                "log_min_duration_statement = {}",
                self.log_min_duration_statement.as_deref().unwrap_or("")
            ));
        }
        if set(&self.log_min_duration_sample) {
            return Some(format!(
                "log_min_duration_sample = {}",
                self.log_min_duration_sample.as_deref().unwrap_or("")
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::ParameterLogging;

    fn with(f: impl FnOnce(&mut ParameterLogging)) -> Option<String> {
        let mut l = ParameterLogging {
            log_statement: Some("none".into()),
            log_min_duration_statement: Some("-1".into()),
            log_min_duration_sample: Some("-1".into()),
            log_parameter_max_length: Some("-1".into()),
            log_parameter_max_length_on_error: Some("0".into()),
            pgaudit_log_parameter: None,
        };
        f(&mut l);
        l.would_log_parameters()
    }

    #[test]
    fn parameter_logging_is_detected() {
        assert_eq!(
            with(|_| {}),
            None,
            "PostgreSQL's defaults log no parameters"
        );
        assert!(with(|l| l.log_statement = Some("mod".into())).is_some());
        assert!(with(|l| l.log_statement = Some("all".into())).is_some());
        assert_eq!(with(|l| l.log_statement = Some("ddl".into())), None);
        assert!(with(|l| l.log_min_duration_statement = Some("0".into())).is_some());
        assert!(with(|l| l.log_min_duration_sample = Some("250".into())).is_some());
        assert!(with(|l| l.log_parameter_max_length_on_error = Some("-1".into())).is_some());
        assert!(with(|l| l.pgaudit_log_parameter = Some("on".into())).is_some());
        assert_eq!(
            with(|l| {
                l.log_statement = Some("all".into());
                l.log_parameter_max_length = Some("0".into());
            }),
            None,
            "parameters are not logged at log_parameter_max_length = 0"
        );
    }
}
