//! One TFTP read transfer as a state machine: `start`, `on_ack`, `on_error`,
//! `on_timer` return the steps to take; the shell owns the socket, the file and
//! the timer. Pure: no I/O, no clock reads (time comes in as `now`).
//!
//! Blocks are numbered absolutely (u64) inside; only the wire uses u16, which
//! rolls over 65535 → 0 (what tftp-hpa, atftp, curl and iPXE expect). A duplicate
//! or stale ACK never triggers a retransmission (RFC 1350 §"Sorcerer's Apprentice",
//! RFC 1123 §4.2.3.1): only the timer does.

use std::time::{Duration, Instant};

use super::packet::{Agreed, DEFAULT_BLKSIZE, Requested};

/// Server-side bounds on what a client may negotiate, and on retries.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_blksize: u16,
    pub max_window: u16,
    pub default_timeout: Duration,
    pub max_retries: u32,
    /// Whole-transfer limit, whatever the client does.
    pub transfer_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_blksize: 65464,
            max_window: 64,
            default_timeout: Duration::from_secs(1),
            max_retries: 5,
            transfer_timeout: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    SendOack(Agreed),
    /// Send DATA block `block` (absolute, from 1): payload is bytes
    /// `(block-1)*blksize ..` of the file, at most `blksize` of them.
    SendData {
        block: u64,
    },
    Done,
    Failed(Failure),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The client sent ERROR (OVMF does this after its tsize probe).
    ClientAbort {
        code: u16,
    },
    TooManyRetries,
    TransferTimeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// OACK sent, waiting for ACK 0.
    Oack(Agreed),
    Data,
    Finished,
}

#[derive(Debug, Clone)]
pub struct Session {
    blksize: u64,
    window: u64,
    timeout: Duration,
    last_block: u64,
    /// Highest block the client acknowledged (0 before any DATA).
    acked: u64,
    /// Highest block sent so far.
    sent: u64,
    phase: Phase,
    retries: u32,
    deadline: Instant,
    give_up_at: Instant,
    limits: Limits,
}

impl Session {
    /// Starts a read of a `size`-byte file with the client's requested options.
    pub fn start(
        requested: Requested,
        size: u64,
        limits: Limits,
        now: Instant,
    ) -> (Session, Vec<Step>) {
        let blksize = requested.blksize.map(|b| b.min(limits.max_blksize));
        let window = requested
            .windowsize
            .map(|w| w.min(limits.max_window).max(1));
        let agreed = Agreed {
            blksize,
            timeout: requested.timeout,
            tsize: requested.tsize.then_some(size),
            windowsize: window,
        };
        let block = u64::from(blksize.unwrap_or(DEFAULT_BLKSIZE));
        let timeout = requested
            .timeout
            .map(|t| Duration::from_secs(u64::from(t)))
            .unwrap_or(limits.default_timeout);
        let mut s = Session {
            blksize: block,
            window: u64::from(window.unwrap_or(1)),
            timeout,
            // A file that is an exact multiple of blksize ends with an empty block.
            last_block: size / block + 1,
            acked: 0,
            sent: 0,
            phase: Phase::Data,
            retries: 0,
            deadline: now + timeout,
            give_up_at: now + limits.transfer_timeout,
            limits,
        };
        if agreed.is_empty() {
            let steps = s.send_window(now);
            (s, steps)
        } else {
            s.phase = Phase::Oack(agreed);
            (s, vec![Step::SendOack(agreed)])
        }
    }

    pub fn blksize(&self) -> u64 {
        self.blksize
    }

    /// When `on_timer` wants to be called next.
    pub fn deadline(&self) -> Instant {
        self.deadline.min(self.give_up_at)
    }

    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    fn send_window(&mut self, now: Instant) -> Vec<Step> {
        let from = self.acked + 1;
        let to = (self.acked + self.window).min(self.last_block);
        self.sent = self.sent.max(to);
        self.deadline = now + self.timeout;
        (from..=to).map(|block| Step::SendData { block }).collect()
    }

    /// The absolute block an ACK's wire number refers to, if it is one we could
    /// be waiting for: between the last ACK and the last block sent.
    fn resolve(&self, wire: u16) -> Option<u64> {
        let offset = u64::from(wire.wrapping_sub(self.acked as u16));
        let block = self.acked + offset;
        (block <= self.sent).then_some(block)
    }

    pub fn on_ack(&mut self, wire: u16, now: Instant) -> Vec<Step> {
        match self.phase {
            Phase::Finished => Vec::new(),
            Phase::Oack(_) => {
                if wire != 0 {
                    return Vec::new();
                }
                self.phase = Phase::Data;
                self.retries = 0;
                self.send_window(now)
            }
            Phase::Data => {
                if now >= self.give_up_at {
                    // A client that keeps ACKing does not outlive the whole-transfer limit.
                    self.phase = Phase::Finished;
                    return vec![Step::Failed(Failure::TransferTimeout)];
                }
                let Some(block) = self.resolve(wire) else {
                    return Vec::new();
                };
                if block <= self.acked {
                    // Duplicate: never retransmit on it.
                    return Vec::new();
                }
                self.acked = block;
                self.retries = 0;
                if block == self.last_block {
                    self.phase = Phase::Finished;
                    return vec![Step::Done];
                }
                // The next window starts after the ACKed block; an ACK part-way through
                // a window means the client saw a gap (RFC 7440 §4), so that resends.
                self.send_window(now)
            }
        }
    }

    pub fn on_error(&mut self, code: u16) -> Vec<Step> {
        if self.phase == Phase::Finished {
            return Vec::new();
        }
        self.phase = Phase::Finished;
        vec![Step::Failed(Failure::ClientAbort { code })]
    }

    pub fn on_timer(&mut self, now: Instant) -> Vec<Step> {
        if self.phase == Phase::Finished {
            return Vec::new();
        }
        if now >= self.give_up_at {
            self.phase = Phase::Finished;
            return vec![Step::Failed(Failure::TransferTimeout)];
        }
        if now < self.deadline {
            return Vec::new();
        }
        self.retries += 1;
        if self.retries > self.limits.max_retries {
            self.phase = Phase::Finished;
            return vec![Step::Failed(Failure::TooManyRetries)];
        }
        match self.phase {
            Phase::Oack(agreed) => {
                self.deadline = now + self.timeout;
                vec![Step::SendOack(agreed)]
            }
            _ => self.send_window(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(blocks: std::ops::RangeInclusive<u64>) -> Vec<Step> {
        blocks.map(|block| Step::SendData { block }).collect()
    }

    #[test]
    fn plain_transfer_without_options() {
        let t0 = Instant::now();
        let (mut s, steps) = Session::start(Requested::default(), 1000, Limits::default(), t0);
        assert_eq!(steps, data(1..=1));
        assert_eq!(s.on_ack(1, t0), data(2..=2));
        assert_eq!(
            s.on_ack(2, t0),
            vec![Step::Done],
            "1000 bytes = 512 + 488: done after block 2"
        );
        assert!(s.is_finished());
    }

    #[test]
    fn exact_multiple_ends_with_an_empty_block() {
        let t0 = Instant::now();
        let (mut s, _) = Session::start(Requested::default(), 1024, Limits::default(), t0);
        s.on_ack(1, t0);
        assert_eq!(s.on_ack(2, t0), data(3..=3));
        assert_eq!(s.on_ack(3, t0), vec![Step::Done]);
    }

    #[test]
    fn options_are_negotiated_through_oack_and_clamped() {
        let t0 = Instant::now();
        let req = Requested {
            blksize: Some(9000),
            timeout: Some(2),
            tsize: true,
            windowsize: Some(500),
        };
        let limits = Limits {
            max_blksize: 1468,
            max_window: 16,
            ..Limits::default()
        };
        let (mut s, steps) = Session::start(req, 10_000, limits, t0);
        assert_eq!(
            steps,
            vec![Step::SendOack(Agreed {
                blksize: Some(1468),
                timeout: Some(2),
                tsize: Some(10_000),
                windowsize: Some(16)
            })]
        );
        assert_eq!(s.on_ack(5, t0), vec![], "only ACK 0 answers an OACK");
        assert_eq!(
            s.on_ack(0, t0),
            data(1..=7),
            "10000 bytes / 1468 = 7 blocks, all in one window"
        );
        assert_eq!(s.on_ack(7, t0), vec![Step::Done]);
    }

    #[test]
    fn ovmf_tsize_probe_aborted_with_error() {
        let t0 = Instant::now();
        let req = Requested {
            tsize: true,
            ..Requested::default()
        };
        let (mut s, steps) = Session::start(req, 123, Limits::default(), t0);
        assert!(matches!(steps.as_slice(), [Step::SendOack(a)] if a.tsize == Some(123)));
        assert_eq!(
            s.on_error(8),
            vec![Step::Failed(Failure::ClientAbort { code: 8 })]
        );
        assert_eq!(
            s.on_timer(t0 + Duration::from_secs(10)),
            vec![],
            "nothing after the end"
        );
    }

    #[test]
    fn windows_advance_and_partial_acks_resume_after_the_acked_block() {
        let t0 = Instant::now();
        let req = Requested {
            windowsize: Some(4),
            ..Requested::default()
        };
        let (mut s, steps) = Session::start(req, 512 * 10, Limits::default(), t0);
        assert!(matches!(steps.as_slice(), [Step::SendOack(_)]));
        assert_eq!(s.on_ack(0, t0), data(1..=4));
        assert_eq!(s.on_ack(4, t0), data(5..=8));
        // Block 7 was lost: the client ACKs 6; we resume at 7.
        assert_eq!(s.on_ack(6, t0), data(7..=10));
        assert_eq!(s.on_ack(10, t0), data(11..=11), "the empty final block");
        assert_eq!(s.on_ack(11, t0), vec![Step::Done]);
    }

    #[test]
    fn duplicate_acks_never_cause_retransmission() {
        let t0 = Instant::now();
        let (mut s, _) = Session::start(Requested::default(), 512 * 100, Limits::default(), t0);
        s.on_ack(1, t0);
        for _ in 0..1000 {
            assert_eq!(s.on_ack(1, t0), vec![], "duplicate ACK 1");
            assert_eq!(s.on_ack(0, t0), vec![], "stale ACK 0");
            assert_eq!(s.on_ack(50, t0), vec![], "ACK for a block never sent");
        }
        assert_eq!(s.on_ack(2, t0), data(3..=3));
    }

    #[test]
    fn block_numbers_roll_over_to_zero() {
        let t0 = Instant::now();
        let blocks = 70_000u64;
        let req = Requested {
            windowsize: Some(16),
            ..Requested::default()
        };
        let (mut s, _) = Session::start(req, 512 * blocks - 1, Limits::default(), t0);
        let mut next = s.on_ack(0, t0);
        let mut sent_total = 0u64;
        loop {
            let last = match next.last() {
                Some(Step::SendData { block }) => *block,
                Some(Step::Done) => break,
                other => panic!("unexpected {other:?}"),
            };
            sent_total += next.len() as u64;
            next = s.on_ack(last as u16, t0);
        }
        assert_eq!(
            sent_total, blocks,
            "every block sent once, across the 65535 → 0 rollover"
        );
    }

    #[test]
    fn timer_retransmits_the_window_then_gives_up() {
        let t0 = Instant::now();
        let limits = Limits {
            max_retries: 2,
            ..Limits::default()
        };
        let req = Requested {
            windowsize: Some(2),
            ..Requested::default()
        };
        let (mut s, _) = Session::start(req, 5000, limits, t0);
        s.on_ack(0, t0);
        assert_eq!(
            s.on_timer(t0 + Duration::from_millis(500)),
            vec![],
            "before the deadline"
        );
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(s.on_timer(t1), data(1..=2));
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(s.on_timer(t2), data(1..=2));
        assert_eq!(
            s.on_timer(t2 + Duration::from_secs(1)),
            vec![Step::Failed(Failure::TooManyRetries)]
        );
    }

    #[test]
    fn whole_transfer_timeout_holds_against_a_slow_client() {
        let t0 = Instant::now();
        let limits = Limits {
            transfer_timeout: Duration::from_secs(5),
            ..Limits::default()
        };
        let (mut s, _) = Session::start(Requested::default(), 512 * 1000, limits, t0);
        let mut t = t0;
        let mut block = 0u16;
        // A client that ACKs just in time, forever.
        loop {
            t += Duration::from_millis(900);
            let steps = s.on_timer(t);
            if steps == vec![Step::Failed(Failure::TransferTimeout)] {
                break;
            }
            assert!(
                t < t0 + Duration::from_secs(6),
                "must give up by the transfer timeout"
            );
            block += 1;
            s.on_ack(block, t);
        }
        assert!(s.deadline() <= t0 + Duration::from_secs(5));
    }

    /// Found by the tftp fuzz target: an ACK that arrives after the limit (the
    /// timer has not fired yet) must end the transfer, not send more.
    #[test]
    fn an_ack_after_the_transfer_limit_ends_it() {
        let t0 = Instant::now();
        let limits = Limits {
            transfer_timeout: Duration::from_secs(5),
            ..Limits::default()
        };
        let (mut s, _) = Session::start(Requested::default(), 512 * 1000, limits, t0);
        assert_eq!(s.on_ack(1, t0 + Duration::from_secs(1)), data(2..=2));
        assert_eq!(
            s.on_ack(2, t0 + Duration::from_secs(5)),
            vec![Step::Failed(Failure::TransferTimeout)]
        );
        assert!(s.is_finished());
    }
}
