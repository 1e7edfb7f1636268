//! Where the verifier and the signer read the time: the system clock, or a clock a test moves.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current Unix time, in seconds.
pub trait Clock: Send + Sync + 'static {
    /// Seconds since the Unix epoch (negative before it).
    fn now_unix(&self) -> i64;
}

/// The system's wall clock, in whole seconds.
///
/// On Linux it is read at the kernel tick's resolution (`CLOCK_REALTIME_COARSE`: the time of
/// the last tick, which the kernel keeps where the read needs no system call), so it is at
/// most one tick (1 to 10 ms) behind. A verifier that reads the clock twice a request (three
/// times for one with a body) and works in whole seconds needs no more, and the precise read
/// costs about 30 ns in a virtual machine (the time stamp counter) where this one costs about
/// 3 (`cargo bench --bench verify -- clock`). Elsewhere, or should that clock be refused, it is
/// [`SystemTime::now`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> i64 {
        coarse_unix_seconds().unwrap_or_else(precise_unix_seconds)
    }
}

fn precise_unix_seconds() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// The Unix seconds of the kernel's last tick, or `None` off Linux or if the kernel refuses.
#[allow(unsafe_code)]
fn coarse_unix_seconds() -> Option<i64> {
    #[cfg(target_os = "linux")]
    {
        // Not a struct literal: some of libc's configurations give `timespec` padding fields.
        let mut now = std::mem::MaybeUninit::<libc::timespec>::uninit();
        // SAFETY: `clock_gettime` writes one `timespec` through the pointer, which points at
        // a local of that type, and reads nothing through it.
        let status = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, now.as_mut_ptr()) };
        if status != 0 {
            return None;
        }
        // SAFETY: a `clock_gettime` that returned 0 has written the whole `timespec`.
        let now = unsafe { now.assume_init() };
        // `time_t` is 32 bits on some Linux targets.
        #[allow(clippy::useless_conversion)]
        let seconds = i64::from(now.tv_sec);
        Some(seconds)
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// A clock that stands still until told to move; clones share one time. For tests.
///
/// ```
/// use armor_psk::clock::{Clock, ManualClock};
///
/// let clock = ManualClock::new(1_528_140_529);
/// let seen_by_layer = clock.clone();
/// clock.advance(301);
/// assert_eq!(seen_by_layer.now_unix(), 1_528_140_830);
/// ```
#[derive(Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock showing `unix_seconds`.
    pub fn new(unix_seconds: i64) -> Self {
        ManualClock(Arc::new(AtomicI64::new(unix_seconds)))
    }

    /// Sets the time.
    pub fn set(&self, unix_seconds: i64) {
        self.0.store(unix_seconds, Ordering::SeqCst);
    }

    /// Moves the time by `seconds` (backwards when negative).
    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_unix(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ManualClock")
            .field(&self.now_unix())
            .finish()
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now_unix(&self) -> i64 {
        (**self).now_unix()
    }
}

/// `Tue, 07 Jun 2011 20:51:35 GMT`: the IMF-fixdate form of HTTP's `Date` header, whose
/// year is four digits: `None` outside the years 1 to 9999.
pub(crate) fn http_date(unix_seconds: i64) -> Option<String> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let date = time::OffsetDateTime::from_unix_timestamp(unix_seconds).ok()?;
    if !(1..=9999).contains(&date.year()) {
        return None;
    }
    date.format(&format).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_imf_fixdate() {
        assert_eq!(
            http_date(1_307_479_895).as_deref(),
            Some("Tue, 07 Jun 2011 20:51:35 GMT")
        );
        assert_eq!(http_date(i64::MAX), None);
        // Year 1 is the first with four digits; the year before would print as "0000".
        assert_eq!(
            http_date(-62_135_596_800).as_deref(),
            Some("Mon, 01 Jan 0001 00:00:00 GMT")
        );
        assert_eq!(http_date(-62_135_596_801), None);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now_unix() > 1_577_836_800);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn the_coarse_clock_is_the_precise_one_at_most_a_second_behind() {
        for _ in 0..1_000 {
            let coarse = coarse_unix_seconds().expect("Linux has CLOCK_REALTIME_COARSE");
            let precise = precise_unix_seconds();
            assert!(
                coarse <= precise && precise - coarse <= 1,
                "{coarse} {precise}"
            );
        }
    }
}
