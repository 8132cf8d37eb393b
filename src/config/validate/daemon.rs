//! `[daemon]` and `[http]`.

use super::super::raw::*;
use super::super::*;

pub(super) fn daemon(loc: &Locator<'_>, raw: RawDaemon) -> Result<Daemon, ConfigError> {
    let root = FieldPath::default();
    let err = |p: &FieldPath, m: String| loc.at(p, m);
    let dp = root.key("daemon");
    let schedule = Schedule::parse(raw.schedule.as_deref().unwrap_or(DEFAULT_SCHEDULE))
        .map_err(|m| err(&dp.key("schedule"), m))?;
    let conformance_schedule = Schedule::parse(
        raw.conformance_schedule
            .as_deref()
            .unwrap_or(DEFAULT_CONFORMANCE_SCHEDULE),
    )
    .map_err(|m| err(&dp.key("conformance_schedule"), m))?;
    let batch_size = raw.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
    if batch_size == 0 {
        return Err(err(&dp.key("batch_size"), "must be at least 1".into()));
    }
    let min_batch_size = raw.min_batch_size.unwrap_or(batch_size.min(100)).max(1);
    let max_batch_size = raw.max_batch_size.unwrap_or(batch_size.saturating_mul(20));
    if min_batch_size > batch_size || batch_size > max_batch_size {
        return Err(err(&dp.key("batch_size"), format!(
            "expected min_batch_size ({min_batch_size}) <= batch_size ({batch_size}) <= max_batch_size ({max_batch_size})"
        )));
    }
    let exact = |p: Option<Period>,
                 field: &str,
                 default_ms: u64|
     -> Result<std::time::Duration, ConfigError> {
        match p {
            None => Ok(std::time::Duration::from_millis(default_ms)),
            Some(p) if p.months() > 0 => Err(err(
                &dp.key(field),
                format!("`{p}` is a calendar period; use ms, s, m or h"),
            )),
            Some(p) if p.millis() == 0 => {
                Err(err(&dp.key(field), "must be longer than zero".into()))
            }
            Some(p) => Ok(p.as_std()),
        }
    };
    let daemon = Daemon {
        schedule,
        conformance_schedule,
        batch_size,
        min_batch_size,
        max_batch_size,
        max_batch_duration: exact(
            raw.max_batch_duration,
            "max_batch_duration",
            DEFAULT_MAX_BATCH_DURATION_MS,
        )?,
        grace_period: exact(raw.grace_period, "grace_period", 30_000)?,
    };

    Ok(daemon)
}

pub(super) fn http(loc: &Locator<'_>, raw: RawHttp) -> Result<Http, ConfigError> {
    let root = FieldPath::default();
    let err = |p: &FieldPath, m: String| loc.at(p, m);
    let listen_text = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = SocketAddr::from_str(listen_text).map_err(|_| {
        err(
            &root.key("http").key("listen"),
            format!("invalid address `{listen_text}`: expected IP:PORT, e.g. \"127.0.0.1:9187\""),
        )
    })?;

    Ok(Http { listen })
}
