//! A line on stderr when a signal ends the process, then the signal's own ending: without it a
//! member killed by a signal leaves nothing in its log (a `SIGBUS` from a mapped file, a
//! `SIGHUP` from a closed terminal, a stray `kill -USR1`), and whoever reads the log cannot tell
//! a crash from a clean exit. etcd, a Go program, prints the fault and its goroutines.
//!
//! The line names the signal, how it came (a fault at an address, with the kernel's reason, or
//! sent by a process, with its pid and uid) and the thread it was delivered to:
//!
//! ```text
//! strata: fatal signal SIGBUS (a mapped file's page past its end, or one the file system could not provide) at address 0x7f3a5c001000, in thread tokio-runtime-w (tid 4021)
//! strata: fatal signal SIGHUP sent by process 3977 (uid 0), in thread strata (tid 3980)
//! ```
//!
//! After it the signal ends the process as it would have without the report (the exit status
//! still names the signal): it is raised again under the default action. A fault first goes
//! to the handler that was there before, the standard library's, which reports a thread's stack
//! overflow (and then aborts). Ctrl-C and SIGTERM are not touched: the server stops on them
//! cleanly. A signal a parent had ignored (`nohup`'s `SIGHUP`) stays ignored.
//!
//! The handler only formats into a buffer on its stack and calls `write`, `prctl`, `gettid`,
//! `getpid`, `sigaction` and `raise`, all async-signal-safe.

/// Installs the report for every signal whose default action ends the process, but Ctrl-C
/// (`SIGINT`), `SIGTERM` (handled), `SIGPIPE` (ignored by Rust programs), `SIGKILL` and
/// `SIGSTOP` (which cannot be caught) and `SIGPROF` (profilers').
pub fn install() {
    #[cfg(target_os = "linux")]
    linux::install();
}

/// The signals reported, with their names.
#[cfg(target_os = "linux")]
const SIGNALS: [(libc::c_int, &str); 17] = [
    (libc::SIGSEGV, "SIGSEGV"),
    (libc::SIGBUS, "SIGBUS"),
    (libc::SIGILL, "SIGILL"),
    (libc::SIGFPE, "SIGFPE"),
    (libc::SIGTRAP, "SIGTRAP"),
    (libc::SIGSYS, "SIGSYS"),
    (libc::SIGABRT, "SIGABRT"),
    (libc::SIGQUIT, "SIGQUIT"),
    (libc::SIGHUP, "SIGHUP"),
    (libc::SIGUSR1, "SIGUSR1"),
    (libc::SIGUSR2, "SIGUSR2"),
    (libc::SIGALRM, "SIGALRM"),
    (libc::SIGVTALRM, "SIGVTALRM"),
    (libc::SIGXCPU, "SIGXCPU"),
    (libc::SIGXFSZ, "SIGXFSZ"),
    (libc::SIGSTKFLT, "SIGSTKFLT"),
    (libc::SIGPWR, "SIGPWR"),
];

/// The signals the hardware raises at a faulting instruction (the others come from a process
/// or the kernel's accounting).
#[cfg(target_os = "linux")]
fn is_fault(signal: libc::c_int) -> bool {
    matches!(
        signal,
        libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE | libc::SIGTRAP
    )
}

/// What the kernel says of a fault, by signal and `si_code` (`siginfo.h`); `None` for one it
/// does not explain here.
#[cfg(target_os = "linux")]
fn fault_reason(signal: libc::c_int, code: libc::c_int) -> Option<&'static str> {
    // SEGV_MAPERR and SEGV_ACCERR, which the libc crate leaves out for Linux.
    const SEGV_MAPERR: libc::c_int = 1;
    const SEGV_ACCERR: libc::c_int = 2;
    Some(match (signal, code) {
        (libc::SIGSEGV, SEGV_MAPERR) => "address not mapped",
        (libc::SIGSEGV, SEGV_ACCERR) => "no permission for the access",
        (libc::SIGBUS, libc::BUS_ADRALN) => "misaligned address",
        (libc::SIGBUS, libc::BUS_ADRERR) => {
            "a mapped file's page past its end, or one the file system could not provide"
        }
        (libc::SIGBUS, libc::BUS_OBJERR) => "hardware error on the mapped object",
        (libc::SIGBUS, libc::BUS_MCEERR_AR | libc::BUS_MCEERR_AO) => "memory hardware error",
        _ => return None,
    })
}

/// How a signal came, as its `siginfo` tells.
#[cfg(target_os = "linux")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// The hardware, at this address (`si_code` above 0 for a fault signal).
    Fault { code: libc::c_int, address: usize },
    /// Another process, with `kill`, `sigqueue` or `tgkill` (`si_code` 0 or below).
    Sent { pid: libc::pid_t, uid: libc::uid_t },
    /// This process itself (`abort`, which raises `SIGABRT`).
    Raised,
    /// The kernel otherwise (a CPU or file size limit, a timer), with this `si_code`.
    Kernel { code: libc::c_int },
}

/// A fixed buffer the handler formats into (no allocation in a signal handler).
#[cfg(target_os = "linux")]
struct Line {
    bytes: [u8; 512],
    len: usize,
}

#[cfg(target_os = "linux")]
impl Line {
    fn new() -> Self {
        Line {
            bytes: [0; 512],
            len: 0,
        }
    }

    /// Appends what fits.
    fn push(&mut self, text: &[u8]) {
        let room = self.bytes.len() - self.len;
        let n = text.len().min(room);
        self.bytes[self.len..self.len + n].copy_from_slice(&text[..n]);
        self.len += n;
    }

    fn push_str(&mut self, text: &str) {
        self.push(text.as_bytes());
    }

    /// Appends `value` in decimal.
    fn push_decimal(&mut self, value: u64) {
        self.push_digits(value, 10);
    }

    /// Appends `value` as `0x` and lowercase hex digits.
    fn push_hex(&mut self, value: u64) {
        self.push(b"0x");
        self.push_digits(value, 16);
    }

    /// Appends `value`'s digits in `radix` (at most 16), lowercase.
    fn push_digits(&mut self, value: u64, radix: u64) {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut rest = value;
        loop {
            at -= 1;
            digits[at] = b"0123456789abcdef"[(rest % radix) as usize];
            rest /= radix;
            if rest == 0 {
                break;
            }
        }
        self.push(&digits[at..]);
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The report's line for `signal` (named `name`), come as `origin`, delivered to the thread
/// `thread` (its name, as `prctl` gives it) of id `tid`.
#[cfg(target_os = "linux")]
fn report(
    line: &mut Line,
    signal: libc::c_int,
    name: &str,
    origin: Origin,
    thread: &[u8],
    tid: u64,
) {
    line.push_str("strata: fatal signal ");
    line.push_str(name);
    match origin {
        Origin::Fault { code, address } => {
            if let Some(reason) = fault_reason(signal, code) {
                line.push_str(" (");
                line.push_str(reason);
                line.push_str(")");
            } else {
                line.push_str(" (code ");
                line.push_decimal(code as u64);
                line.push_str(")");
            }
            line.push_str(" at address ");
            line.push_hex(address as u64);
        }
        Origin::Sent { pid, uid } => {
            line.push_str(" sent by process ");
            line.push_decimal(pid.unsigned_abs().into());
            line.push_str(" (uid ");
            line.push_decimal(uid.into());
            line.push_str(")");
        }
        Origin::Raised => line.push_str(" raised by this process"),
        Origin::Kernel { code } => {
            line.push_str(" from the kernel (code ");
            if code < 0 {
                line.push_str("-");
            }
            line.push_decimal(code.unsigned_abs().into());
            line.push_str(")");
        }
    }
    line.push_str(", in thread ");
    line.push(thread);
    line.push_str(" (tid ");
    line.push_decimal(tid);
    line.push_str(")\n");
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // sigaction and the handler: the signal interfaces have no safe wrapper.
mod linux {
    use std::sync::OnceLock;

    use super::{Line, Origin, SIGNALS, is_fault, report};

    /// The action each reported signal had before (for the standard library's stack overflow
    /// report), in the order of [`SIGNALS`]; set once, before any handler is installed.
    static PREVIOUS: OnceLock<[Option<libc::sigaction>; SIGNALS.len()]> = OnceLock::new();

    pub(super) fn install() {
        let previous = PREVIOUS.get_or_init(|| {
            SIGNALS.map(|(signal, _)| {
                // SAFETY: a zeroed sigaction is a valid out-parameter; a null new action only
                // reads the current one.
                let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
                let read = unsafe { libc::sigaction(signal, std::ptr::null(), &raw mut old) };
                (read == 0).then_some(old)
            })
        });
        for (i, (signal, _)) in SIGNALS.iter().enumerate() {
            let Some(old) = previous[i] else {
                continue;
            };
            // Ignored by whoever started us (nohup): stays ignored.
            if old.sa_sigaction == libc::SIG_IGN {
                continue;
            }
            // SAFETY: the handler is async-signal-safe (see the module docs); the mask is
            // initialized by sigemptyset before use.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = handler as *const () as libc::sighandler_t;
                action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESETHAND;
                libc::sigemptyset(&raw mut action.sa_mask);
                libc::sigaction(*signal, &raw const action, std::ptr::null_mut());
            }
        }
    }

    extern "C" fn handler(
        signal: libc::c_int,
        info: *mut libc::siginfo_t,
        context: *mut libc::c_void,
    ) {
        let Some(i) = SIGNALS.iter().position(|&(s, _)| s == signal) else {
            return;
        };
        // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler; which union
        // member is meaningful follows from si_code, as matched here.
        let origin = unsafe {
            let code = (*info).si_code;
            if code <= 0 {
                // SAFETY (getpid): no preconditions.
                if (*info).si_pid() == libc::getpid() {
                    Origin::Raised
                } else {
                    Origin::Sent {
                        pid: (*info).si_pid(),
                        uid: (*info).si_uid(),
                    }
                }
            } else if is_fault(signal) && code != libc::SI_KERNEL {
                Origin::Fault {
                    code,
                    address: (*info).si_addr() as usize,
                }
            } else {
                Origin::Kernel { code }
            }
        };
        let mut thread = [0u8; 17];
        // SAFETY: PR_GET_NAME writes at most 16 bytes and a NUL into the buffer.
        let named = unsafe { libc::prctl(libc::PR_GET_NAME, thread.as_mut_ptr()) } == 0;
        let thread_len = if named {
            thread.iter().position(|&b| b == 0).unwrap_or(16)
        } else {
            0
        };
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let mut line = Line::new();
        report(
            &mut line,
            signal,
            SIGNALS[i].1,
            origin,
            &thread[..thread_len],
            tid.unsigned_abs().into(),
        );
        let bytes = line.as_bytes();
        // SAFETY: writes the buffer's initialized bytes; a failed write is nothing to act on.
        unsafe {
            libc::write(2, bytes.as_ptr().cast(), bytes.len());
        }
        // SA_RESETHAND has made the action the default again. A fault goes first to the
        // handler that was there before, if any (the standard library's, for SIGSEGV and
        // SIGBUS): it reports a thread's stack overflow and aborts, and otherwise puts the
        // default back and returns.
        if matches!(origin, Origin::Fault { .. })
            && let Some(Some(old)) = PREVIOUS.get().map(|p| p[i])
            && old.sa_flags & libc::SA_SIGINFO != 0
            && old.sa_sigaction != libc::SIG_DFL
            && old.sa_sigaction != libc::SIG_IGN
        {
            // Its abort's SIGABRT must not be reported: that report would run inside this
            // handler, on its small alternate stack, and overflow it (the fault is reported).
            // SAFETY: a zeroed sigaction is SIG_DFL with an empty mask.
            unsafe {
                let default: libc::sigaction = std::mem::zeroed();
                libc::sigaction(libc::SIGABRT, &raw const default, std::ptr::null_mut());
            }
            // SAFETY: the previous SA_SIGINFO handler, called as the kernel would have called
            // it, with the same arguments.
            let previous: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(old.sa_sigaction) };
            previous(signal, info, context);
        }
        // Raised again, pending until this handler returns (the signal is blocked while it
        // runs), then delivered under the default action: the process ends by it, whether it
        // was sent, came from the kernel, or was a fault (one that traps after its instruction,
        // as SIGTRAP's breakpoint, would not fault again).
        // SAFETY: raise has no preconditions.
        unsafe {
            libc::raise(signal);
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn line(signal: libc::c_int, name: &str, origin: Origin) -> String {
        let mut line = Line::new();
        report(&mut line, signal, name, origin, b"tokio-runtime-w", 4021);
        String::from_utf8(line.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn a_fault_names_its_reason_and_address() {
        let text = line(
            libc::SIGBUS,
            "SIGBUS",
            Origin::Fault {
                code: libc::BUS_ADRERR,
                address: 0x7f3a_5c00_1000,
            },
        );
        assert_eq!(
            text,
            "strata: fatal signal SIGBUS (a mapped file's page past its end, or one the file \
             system could not provide) at address 0x7f3a5c001000, in thread tokio-runtime-w \
             (tid 4021)\n"
        );
        let text = line(
            libc::SIGFPE,
            "SIGFPE",
            Origin::Fault {
                code: 7,
                address: 0,
            },
        );
        assert!(text.contains("SIGFPE (code 7) at address 0x0,"), "{text}");
    }

    #[test]
    fn a_sent_signal_names_its_sender() {
        let text = line(libc::SIGHUP, "SIGHUP", Origin::Sent { pid: 3977, uid: 0 });
        assert_eq!(
            text,
            "strata: fatal signal SIGHUP sent by process 3977 (uid 0), in thread \
             tokio-runtime-w (tid 4021)\n"
        );
        let text = line(libc::SIGXCPU, "SIGXCPU", Origin::Kernel { code: 128 });
        assert!(
            text.contains("SIGXCPU from the kernel (code 128),"),
            "{text}"
        );
        let text = line(libc::SIGABRT, "SIGABRT", Origin::Raised);
        assert!(text.contains("SIGABRT raised by this process,"), "{text}");
    }

    #[test]
    fn a_line_longer_than_its_buffer_is_cut_not_overrun() {
        let mut line = Line::new();
        for _ in 0..100 {
            line.push_str("0123456789");
        }
        line.push_decimal(u64::MAX);
        line.push_hex(u64::MAX);
        assert_eq!(line.as_bytes().len(), 512);
        let mut line = Line::new();
        line.push_decimal(u64::MAX);
        line.push_str(" ");
        line.push_hex(u64::MAX);
        line.push_str(" ");
        line.push_decimal(0);
        assert_eq!(
            String::from_utf8(line.as_bytes().to_vec()).unwrap(),
            "18446744073709551615 0xffffffffffffffff 0"
        );
    }

    #[test]
    fn every_reported_signal_ends_a_process_by_default() {
        // Never SIGINT or SIGTERM (the server's clean stop), nor a signal that cannot be
        // caught, nor one whose default does not end the process.
        for (signal, _) in SIGNALS {
            assert!(
                ![
                    libc::SIGINT,
                    libc::SIGTERM,
                    libc::SIGKILL,
                    libc::SIGSTOP,
                    libc::SIGPIPE,
                    libc::SIGCHLD,
                    libc::SIGCONT,
                    libc::SIGWINCH,
                    libc::SIGURG,
                    libc::SIGPROF,
                ]
                .contains(&signal)
            );
        }
    }
}
