//! Time as a run sees it when it records attempts and waits for a retry:
//! the system clock, or, in tests, a manual clock that moves only when a
//! run waits, so retry timing is checked exactly and at once.

use std::time::Duration;

#[derive(Clone, Default)]
pub enum Clock {
    #[default]
    System,
    /// Unix milliseconds, moved forward by each `sleep`.
    #[cfg(test)]
    Manual(std::sync::Arc<std::sync::atomic::AtomicI64>),
}

impl Clock {
    /// A manual clock reading `start_ms`.
    #[cfg(test)]
    pub fn manual(start_ms: i64) -> Clock {
        Clock::Manual(std::sync::Arc::new(start_ms.into()))
    }

    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => crate::events::now_ms(),
            #[cfg(test)]
            Clock::Manual(ms) => ms.load(std::sync::atomic::Ordering::SeqCst),
        }
    }

    pub async fn sleep(&self, d: Duration) {
        match self {
            Clock::System => tokio::time::sleep(d).await,
            #[cfg(test)]
            Clock::Manual(ms) => {
                let d = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
                ms.fetch_add(d, std::sync::atomic::Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
        }
    }
}
