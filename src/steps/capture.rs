//! Capturing a stream with a cap: the tail is kept, the cut is reported;
//! a running step's lines also go to its live log as they come.

use tokio::io::{AsyncRead, AsyncReadExt};

use super::live::LineSink;

/// Reads `reader` to its end, keeping at most `cap` bytes: the last ones,
/// which hold the error that ended a failing command.
pub async fn read_tail<R: AsyncRead + Unpin>(reader: R, cap: usize) -> (Vec<u8>, u64) {
    read_tail_to(reader, cap, None).await
}

/// The same, and each line handed to `sink` as soon as it is complete (the
/// last one, without its newline, at the end): a running step's live output.
pub async fn read_tail_to<R: AsyncRead + Unpin>(
    mut reader: R,
    cap: usize,
    sink: Option<LineSink>,
) -> (Vec<u8>, u64) {
    let mut kept: Vec<u8> = Vec::new();
    let mut dropped: u64 = 0;
    let mut lines = sink.map(|s| Lines {
        sink: s,
        partial: Vec::new(),
        over: 0,
    });
    let mut buf = [0u8; 8192];
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(lines) = &mut lines {
            lines.feed(&buf[..n]);
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > cap.saturating_mul(2).max(16384) {
            let cut = kept.len() - cap;
            dropped += cut as u64;
            kept.drain(..cut);
        }
    }
    if let Some(lines) = &lines
        && !lines.partial.is_empty()
    {
        lines.sink.line(&lines.partial, lines.over);
    }
    if kept.len() > cap {
        let cut = kept.len() - cap;
        dropped += cut as u64;
        kept.drain(..cut);
    }
    (kept, dropped)
}

/// A stream cut into lines for a [`LineSink`]; a line's bytes past what
/// the sink keeps are counted, not kept.
struct Lines {
    sink: LineSink,
    partial: Vec<u8>,
    over: usize,
}

impl Lines {
    fn feed(&mut self, mut bytes: &[u8]) {
        while let Some(at) = bytes.iter().position(|&b| b == b'\n') {
            self.keep(&bytes[..at]);
            self.sink.line(&self.partial, self.over);
            self.partial.clear();
            self.over = 0;
            bytes = &bytes[at + 1..];
        }
        self.keep(bytes);
    }

    fn keep(&mut self, bytes: &[u8]) {
        let room = (self.sink.keep + 1)
            .saturating_sub(self.partial.len())
            .min(bytes.len());
        self.partial.extend_from_slice(&bytes[..room]);
        self.over += bytes.len() - room;
    }
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
    use crate::steps::live::MAX_LINE;

    /// Lines are handed over whole however the stream is cut, a long one
    /// cut at MAX_LINE with its rest counted, `\r\n` as `\n`, secrets
    /// redacted, the last one without its newline at the end.
    #[tokio::test]
    async fn lines_go_to_the_live_log_whole() {
        let log = std::sync::Arc::new(super::super::live::RunLog::default());
        let sink = LineSink::new(
            std::sync::Arc::clone(&log),
            2,
            "s",
            crate::api::LogStream::Stdout,
            std::sync::Arc::new(crate::steps::secret_patterns(&[
                "pw".into(),
                "a longer\nkey-of-lines".into(),
            ])),
        );
        let long = "y".repeat(MAX_LINE + 100);
        let text = "one\r\ntw".to_owned();
        let mut lines = Lines {
            sink,
            partial: Vec::new(),
            over: 0,
        };
        lines.feed(text.as_bytes());
        lines.feed(format!("o pw\n{long}").as_bytes());
        lines.feed(b"zz\nlast a longer");
        lines.feed(format!("\n{}key-of-lines\n", "z".repeat(MAX_LINE - 2)).as_bytes());
        lines.feed(b"key-of-lines");
        lines.sink.line(&lines.partial, lines.over);
        let (got, skipped, closed) = log.since(0);
        assert_eq!((skipped, closed), (0, false));
        let texts: Vec<&str> = got.iter().map(|l| l.line.as_str()).collect();
        assert_eq!(texts[0], "one");
        assert_eq!(texts[1], "two ***");
        assert_eq!(
            texts[2],
            format!(
                "{} [nexusd: 102 more bytes of this line cut]",
                "y".repeat(MAX_LINE)
            )
        );
        assert_eq!(texts[3], "last ***", "each line of a secret");
        // A secret across the cut is found whole, then the line is cut.
        assert_eq!(
            texts[4],
            format!("{}**", "z".repeat(MAX_LINE - 2)) + " [nexusd: 1 more bytes of this line cut]"
        );
        assert_eq!(texts[5], "***");
        assert_eq!(got[5].seq, 5);
        assert_eq!(got[5].attempt, 2);
        // Only the last lines are kept; a reader from 0 is told how many not.
        for i in 0..super::super::live::MAX_LINES {
            log.push(2, "s", crate::api::LogStream::Stderr, i.to_string());
        }
        let (got, skipped, _) = log.since(0);
        assert_eq!(skipped, 6);
        assert_eq!(got.len(), super::super::live::MAX_LINES);
    }

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
