//! Crash points for the crash-safety tests: with the cargo feature `fault-injection` and
//! `WEIR_CRASH_AFTER=<point>`, the controller stops dead at that point (it says so on stderr
//! and waits to be killed with SIGKILL), so a test can kill it between any two acts. Without the
//! feature this compiles to nothing.

/// Stops here if `WEIR_CRASH_AFTER` names `point`.
#[cfg(feature = "fault-injection")]
pub fn point(point: &str) {
    if std::env::var("WEIR_CRASH_AFTER").is_ok_and(|p| p == point) {
        eprintln!("weir: stopped at crash point {point}, waiting to be killed");
        loop {
            std::thread::park();
        }
    }
}

/// Crash points are compiled in only with the feature `fault-injection`.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_point: &str) {}

/// Warns when `WEIR_CRASH_AFTER` is set in a build that ignores it.
pub fn warn_if_ignored() {
    if cfg!(not(feature = "fault-injection")) && std::env::var_os("WEIR_CRASH_AFTER").is_some() {
        tracing::warn!("WEIR_CRASH_AFTER is ignored: this build has no fault-injection feature");
    }
}
