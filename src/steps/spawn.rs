//! Starting a step's process the way glibc's `posix_spawn` does, with
//! `clone(CLONE_VM | CLONE_VFORK)` on a small stack of its own, plus the
//! two things `posix_spawn` cannot do: the parent-death signal (a step dies
//! with a `kill -9`ed agent) and a pidfd to wait on. Forking the agent for
//! each step would copy its page tables; an `exec` of a helper that sets
//! the signal would cost a second program start. Needs Linux 5.3.
//!
//! Between `clone` and `execve` the child shares the agent's memory, so it
//! only makes system calls on data prepared beforehand, with every signal
//! blocked until the agent's handlers are reset to their defaults.

use std::ffi::{CString, OsStr};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

/// What to start: the program by its absolute path, its arguments after
/// the program itself, its whole environment and its working directory.
pub struct Spec<'a> {
    pub program: &'a Path,
    pub args: Vec<&'a OsStr>,
    pub env: Vec<(&'a OsStr, &'a OsStr)>,
    pub cwd: &'a Path,
}

/// A started process, leader of its own process group, stdin on
/// `/dev/null`, stdout and stderr on pipes. Dropped before it was waited
/// for, its group is killed and the process reaped in the background.
pub struct Child {
    pid: libc::pid_t,
    pidfd: Option<AsyncFd<OwnedFd>>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
}

/// How a process ended: its exit code, or `None` when a signal killed it.
pub type ExitCode = Option<i32>;

impl Child {
    pub fn id(&self) -> libc::pid_t {
        self.pid
    }

    /// Waits for the process to end and reaps it.
    pub async fn wait(&mut self) -> io::Result<ExitCode> {
        let Some(pidfd) = &self.pidfd else {
            return Err(io::Error::other("the process was already waited for"));
        };
        let code = exited(pidfd).await?;
        self.pidfd = None;
        Ok(code)
    }

    /// SIGKILL to the process group: the step and whatever it started
    /// that stayed in its group.
    pub fn kill_group(&self) {
        // SAFETY: killpg only sends a signal; the group is our child's own,
        // and it cannot have been reused before the child was reaped.
        unsafe {
            libc::killpg(self.pid, libc::SIGKILL);
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let Some(pidfd) = self.pidfd.take() else {
            return;
        };
        self.kill_group();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move { exited(&pidfd).await });
            }
            Err(_) => {
                let _ = reap(pidfd.get_ref().as_raw_fd(), 0);
            }
        }
    }
}

/// Waits until the pidfd's process has ended, and reaps it.
async fn exited(pidfd: &AsyncFd<OwnedFd>) -> io::Result<ExitCode> {
    loop {
        let mut ready = pidfd.readable().await?;
        if let Some(code) = reap(pidfd.get_ref().as_raw_fd(), libc::WNOHANG)? {
            return Ok(code);
        }
        ready.clear_ready();
    }
}

/// `waitid` on a pidfd: the exit code once the process has ended.
fn reap(pidfd: RawFd, flags: libc::c_int) -> io::Result<Option<ExitCode>> {
    let mut info = MaybeUninit::<libc::siginfo_t>::zeroed();
    // SAFETY: `info` is a valid siginfo_t to fill; the pidfd is ours.
    let rc = unsafe {
        libc::waitid(
            libc::P_PIDFD,
            pidfd as libc::id_t,
            info.as_mut_ptr(),
            libc::WEXITED | flags,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: zeroed, then filled by the kernel if a child was reaped.
    let info = unsafe { info.assume_init() };
    // SAFETY: for a reaped child, si_pid and si_status are the fields set.
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return Ok(None);
    }
    Ok(Some(match info.si_code {
        libc::CLD_EXITED => Some(status),
        _ => None,
    }))
}

/// Everything the child needs, prepared before `clone`, since after it the
/// child may not allocate.
#[repr(C)]
struct ChildArgs {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    parent: libc::pid_t,
    old_mask: libc::sigset_t,
    /// The errno of the step that failed before `execve` took over.
    error: AtomicI32,
}

const STACK_SIZE: usize = 64 * 1024;

/// Starts the process described by `spec`.
pub fn spawn(spec: &Spec<'_>) -> io::Result<Child> {
    let cstr = |s: &OsStr| {
        CString::new(s.as_bytes()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{}` holds a NUL byte", s.to_string_lossy()),
            )
        })
    };
    let program = cstr(spec.program.as_os_str())?;
    let mut args = vec![program.clone()];
    for a in &spec.args {
        args.push(cstr(a)?);
    }
    let mut env = Vec::with_capacity(spec.env.len());
    for (k, v) in &spec.env {
        let mut kv = k.as_bytes().to_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        env.push(cstr(OsStr::from_bytes(&kv))?);
    }
    let cwd = cstr(spec.cwd.as_os_str())?;
    let argv: Vec<*const libc::c_char> = args
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = env
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();

    let devnull = above_stdio(open_devnull()?)?;
    let (out_r, out_w) = pipe_pair()?;
    let (err_r, err_w) = pipe_pair()?;

    let mut child_args = ChildArgs {
        program: program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: cwd.as_ptr(),
        stdin: devnull.as_raw_fd(),
        stdout: out_w.as_raw_fd(),
        stderr: err_w.as_raw_fd(),
        // SAFETY: getpid has no preconditions.
        parent: unsafe { libc::getpid() },
        // SAFETY: an all-zero sigset_t is a valid (empty) set.
        old_mask: unsafe { std::mem::zeroed() },
        error: AtomicI32::new(0),
    };
    let mut stack = vec![0u8; STACK_SIZE];
    // The stack grows down on every architecture Linux runs this on
    // (x86_64, aarch64); its top, 16-byte aligned.
    let top = (stack.as_mut_ptr() as usize + STACK_SIZE) & !15;
    let mut pidfd: libc::c_int = -1;

    // SAFETY: all signals are blocked across clone so that no handler of
    // the agent runs in the child while it shares the agent's memory; the
    // child restores the mask after resetting the handlers.
    let pid = unsafe {
        let mut all = MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigfillset(all.as_mut_ptr());
        libc::pthread_sigmask(libc::SIG_BLOCK, all.as_ptr(), &mut child_args.old_mask);
        let pid = libc::clone(
            child_main,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
            &mut child_args as *mut ChildArgs as *mut libc::c_void,
            &mut pidfd as *mut libc::c_int,
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(
            libc::SIG_SETMASK,
            &child_args.old_mask,
            std::ptr::null_mut(),
        );
        if pid < 0 {
            // EINVAL: a kernel without CLONE_PIDFD; anything else (a process
            // limit, memory) is the error as it is.
            if clone_error.raw_os_error() == Some(libc::EINVAL) {
                return Err(io::Error::new(
                    clone_error.kind(),
                    format!("{clone_error} (starting a step needs Linux 5.3 or later)"),
                ));
            }
            return Err(clone_error);
        }
        pid
    };
    drop(stack);
    drop((out_w, err_w, devnull));
    // SAFETY: with CLONE_PIDFD the kernel wrote a new descriptor we own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let errno = child_args.error.load(Ordering::Acquire);
    if errno != 0 {
        // The child wrote its error and exited before exec; reap it.
        let _ = reap(pidfd.as_raw_fd(), 0);
        return Err(io::Error::from_raw_os_error(errno));
    }
    // SAFETY: an OwnedFd: open, and the same descriptor for its lifetime.
    let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    Ok(Child {
        pid,
        pidfd: Some(pidfd),
        stdout: Some(pipe::Receiver::from_owned_fd(out_r)?),
        stderr: Some(pipe::Receiver::from_owned_fd(err_r)?),
    })
}

/// Records the child's errno for the parent and exits.
unsafe fn fail(a: &ChildArgs) -> ! {
    // SAFETY: the errno of this thread, which the child shares.
    unsafe {
        a.error.store(*libc::__errno_location(), Ordering::Release);
        libc::_exit(127)
    }
}

/// The child, on its own stack, sharing the agent's memory until
/// `execve`: system calls only.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's ChildArgs, alive while the parent is
    // suspended by CLONE_VFORK; only async-signal-safe calls follow.
    unsafe {
        let a = &*(arg as *const ChildArgs);
        // The agent's handlers mean nothing in the step: back to the
        // defaults, and SIGPIPE too, which Rust ignores. Signals the agent
        // inherited as ignored stay ignored, as across any exec.
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        for sig in 1..65 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            if old.sa_sigaction != libc::SIG_DFL
                && (old.sa_sigaction != libc::SIG_IGN || sig == libc::SIGPIPE)
            {
                libc::sigaction(sig, &default, std::ptr::null_mut());
            }
        }
        if libc::setpgid(0, 0) != 0 {
            fail(a);
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            fail(a);
        }
        // The agent died before the signal was armed: nothing to run for.
        if libc::getppid() != a.parent {
            libc::_exit(127);
        }
        for (from, to) in [(a.stdin, 0), (a.stdout, 1), (a.stderr, 2)] {
            if libc::dup2(from, to) < 0 {
                fail(a);
            }
        }
        if libc::chdir(a.cwd) != 0 {
            fail(a);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &a.old_mask, std::ptr::null_mut());
        libc::execve(a.program, a.argv, a.envp);
        fail(a)
    }
}

fn open_devnull() -> io::Result<OwnedFd> {
    // SAFETY: a constant path, flags only.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A pipe, both ends close-on-exec and above 2, so that the child's
/// `dup2` onto 0, 1 and 2 never meets its own source.
fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: new descriptors we own.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((above_stdio(r)?, above_stdio(w)?))
}

/// The descriptor itself if it is above 2, else a close-on-exec copy that
/// is (an agent started with stdio closed gets 0, 1 or 2 from `open`).
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own.
    let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::capture::read_tail;

    fn sh(script: &str, env: &[(&str, &str)]) -> io::Result<Child> {
        spawn(&Spec {
            program: Path::new("/bin/sh"),
            args: vec!["-c".as_ref(), script.as_ref()],
            env: env.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).collect(),
            cwd: Path::new("/tmp"),
        })
    }

    async fn run(mut child: Child) -> (ExitCode, String, String) {
        let out = tokio::spawn(read_tail(child.stdout.take().unwrap(), 1 << 20));
        let err = tokio::spawn(read_tail(child.stderr.take().unwrap(), 1 << 20));
        let code = child.wait().await.unwrap();
        let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
        (code, text(out.await.unwrap().0), text(err.await.unwrap().0))
    }

    #[tokio::test]
    async fn output_exit_code_environment_and_directory() {
        let child = sh(
            r#"printf '%s|%s|%s' "$A" "$B" "$(pwd)"; echo oops >&2; exit 3"#,
            &[("A", "one two"), ("B", "$(id)")],
        )
        .unwrap();
        let (code, out, err) = run(child).await;
        assert_eq!(code, Some(3));
        assert_eq!(out, "one two|$(id)|/tmp");
        assert_eq!(err, "oops\n");
    }

    #[tokio::test]
    async fn only_the_given_environment_reaches_the_process() {
        let (_, out, _) = run(sh("env", &[("ONLY", "this")]).unwrap()).await;
        let names: Vec<&str> = out.lines().filter_map(|l| l.split('=').next()).collect();
        assert!(names.contains(&"ONLY"), "{out}");
        assert!(
            !names.contains(&"CARGO"),
            "the agent's own variables leaked: {out}"
        );
    }

    #[tokio::test]
    async fn own_group_stdin_empty_and_sigpipe_not_ignored() {
        let (code, out, _) = run(sh(
            "cat; read _ _ _ _ pgid _ < /proc/$$/stat; echo \"$$ $pgid\"; grep SigIgn /proc/$$/status",
            &[],
        )
        .unwrap())
        .await;
        assert_eq!(code, Some(0));
        let mut lines = out.lines();
        let ids: Vec<&str> = lines.next().unwrap().split(' ').collect();
        assert_eq!(ids[0], ids[1], "the process leads its own group");
        // The test harness ignores SIGPIPE, as every Rust program does; the
        // step must not inherit that.
        let ignored = lines.next().unwrap().strip_prefix("SigIgn:\t").unwrap();
        let ignored = u64::from_str_radix(ignored, 16).unwrap();
        assert_eq!(ignored & (1 << (libc::SIGPIPE - 1)), 0, "SIGPIPE ignored");
    }

    #[tokio::test]
    async fn a_signal_ends_it_without_an_exit_code() {
        let (code, _, _) = run(sh("kill -9 $$", &[]).unwrap()).await;
        assert_eq!(code, None);
    }

    #[tokio::test]
    async fn killing_the_group_takes_what_the_process_started() {
        let mut child = sh("sleep 30 & sleep 30 & wait", &[]).unwrap();
        let out = child.stdout.take().unwrap();
        child.kill_group();
        assert_eq!(child.wait().await.unwrap(), None);
        // The pipe closes only when every holder of its write end (both
        // sleeps) is gone.
        let (bytes, _) = read_tail(out, 16).await;
        assert!(bytes.is_empty());
    }

    #[tokio::test]
    async fn a_missing_program_or_directory_is_an_error_not_a_process() {
        let missing = spawn(&Spec {
            program: Path::new("/nonexistent/sh"),
            args: vec![],
            env: vec![],
            cwd: Path::new("/tmp"),
        })
        .err()
        .expect("no such program");
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        let no_dir = spawn(&Spec {
            program: Path::new("/bin/sh"),
            args: vec!["-c".as_ref(), "true".as_ref()],
            env: vec![],
            cwd: Path::new("/nonexistent/dir"),
        })
        .err()
        .expect("no such directory");
        assert_eq!(no_dir.kind(), io::ErrorKind::NotFound);
        let nul = sh("echo a\0b", &[]).err().expect("a NUL byte");
        assert_eq!(nul.kind(), io::ErrorKind::InvalidInput);
    }
}
