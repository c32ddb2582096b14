//! Capturing a stream with a cap: the tail is kept, the cut is reported.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Reads `reader` to its end, keeping at most `cap` bytes: the last ones,
/// which hold the error that ended a failing command.
pub async fn read_tail<R: AsyncRead + Unpin>(mut reader: R, cap: usize) -> (Vec<u8>, u64) {
    let mut kept: Vec<u8> = Vec::new();
    let mut dropped: u64 = 0;
    let mut buf = [0u8; 8192];
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > cap.saturating_mul(2).max(16384) {
            let cut = kept.len() - cap;
            dropped += cut as u64;
            kept.drain(..cut);
        }
    }
    if kept.len() > cap {
        let cut = kept.len() - cap;
        dropped += cut as u64;
        kept.drain(..cut);
    }
    (kept, dropped)
}

/// The captured text, with a first line saying how much was cut.
pub fn with_cut_note(bytes: &[u8], dropped: u64) -> String {
    let text = String::from_utf8_lossy(bytes);
    if dropped == 0 {
        text.into_owned()
    } else {
        format!(
            "[nexusd: {dropped} earlier bytes cut; the last {} kept]\n{text}",
            bytes.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_the_tail() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let (kept, dropped) = read_tail(&data[..], 1000).await;
        assert_eq!(kept, &data[99_000..]);
        assert_eq!(dropped, 99_000);
        let (kept, dropped) = read_tail(&b"short"[..], 1000).await;
        assert_eq!((kept.as_slice(), dropped), (&b"short"[..], 0));
    }
}
