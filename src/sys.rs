//! The few operating-system calls std does not offer, each wrapped once so the rest of lorch
//! stays safe code. Unix only, like the plugin loader.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Sends `signal` to the process `pid` (a child not reaped yet); one that is gone is no error.
pub fn kill(pid: u32, signal: i32) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    let err = io::Error::last_os_error();
    if rc == 0 || err.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(err)
    }
}

/// Sends `signal` to every process of the process group `pgid`. A group that is already gone
/// is not an error.
pub fn kill_group(pgid: u32, signal: i32) -> io::Result<()> {
    // SAFETY: killpg has no memory-safety preconditions.
    let rc = unsafe { libc::killpg(pgid as libc::pid_t, signal) };
    let err = io::Error::last_os_error();
    if rc == 0 || err.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(err)
    }
}

/// The soft limit on open files lorch started with, once [`raise_open_files_limit`] raised it.
static STARTING_FILES_LIMIT: std::sync::OnceLock<libc::rlimit> = std::sync::OnceLock::new();

/// Raises the soft limit on open files to the hard limit (the soft one is often 1,024), for
/// lorch only: [`keep_starting_files_limit`] gives a worker the limit lorch started with, as a
/// job written for the usual limit expects (`select` breaks above 1,024). Once per process.
pub fn raise_open_files_limit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(raise_to_hard_limit);
}

fn raise_to_hard_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct passed, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            let starting = limit;
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                let _ = STARTING_FILES_LIMIT.set(starting);
            }
        }
    }
}

/// Makes the child that `cmd` spawns start with the open files limit lorch started with.
pub fn keep_starting_files_limit(cmd: &mut Command) {
    let Some(&limit) = STARTING_FILES_LIMIT.get() else {
        return;
    };
    // SAFETY: setrlimit is async-signal-safe and the closure allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            Ok(())
        });
    }
}

/// Waits up to `timeout_ms` for `fd` to be readable (or closed at the other end).
pub fn wait_readable(fd: &impl AsRawFd, timeout_ms: i32) -> io::Result<bool> {
    let mut poll = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: poll reads and writes the one struct it is given.
        match unsafe { libc::poll(&mut poll, 1, timeout_ms) } {
            -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => continue,
            -1 => return Err(io::Error::last_os_error()),
            ready => return Ok(ready > 0),
        }
    }
}

/// Bytes an unprivileged user can still write on the file system holding `path`.
pub fn free_space(path: &std::path::Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: statvfs fills the struct it is given from a NUL-terminated path.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; both pointers are valid for the call.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// The effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and has no preconditions.
    unsafe { libc::geteuid() }
}

/// The signal the kernel sends a worker when the lorch supervising it dies: one nothing else
/// uses, whose default action is to end the process. The worker turns it into SIGKILL for its
/// whole process group ([`kill_own_group_on`]), so the job and every process it started die
/// with lorch, even after `kill -9` of lorch.
#[cfg(target_os = "linux")]
pub const PARENT_DIED: i32 = libc::SIGSTKFLT;
#[cfg(not(target_os = "linux"))]
pub const PARENT_DIED: i32 = libc::SIGUSR2;

/// Makes the child that `cmd` spawns receive [`PARENT_DIED`] when this process dies, armed
/// between fork and exec so there is no moment in which lorch can die unnoticed; a child whose
/// parent is already gone at that point does not start. Linux only; elsewhere a no-op.
///
/// The kernel sends the signal when the *thread* that spawned the child ends, so spawn from a
/// thread that lives as long as the child (lorch spawns from its main thread).
pub fn die_with_parent(cmd: &mut Command) {
    signal_when_parent_dies(cmd, PARENT_DIED);
}

/// Makes the child that `cmd` spawns receive `signal` when this process (the thread spawning)
/// dies, as [`die_with_parent`] does with [`PARENT_DIED`]: a child lorch given SIGTERM ends its
/// run as cancelled, recorded.
pub fn signal_when_parent_dies(cmd: &mut Command, signal: i32) {
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: prctl and getppid are async-signal-safe and the closure allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, signal) == -1 {
                    return Err(io::Error::last_os_error());
                }
                // Armed; but if lorch died before that, nobody will send it: check.
                if libc::getppid() != parent {
                    // lorch exited before its worker started. (No allocation here, between
                    // fork and exec: an errno only.)
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (cmd, signal);
}

/// On `signal`, SIGKILL to every process of this process's group (itself included). For the
/// worker, with [`PARENT_DIED`]: the handler only calls `kill`, which is async-signal-safe.
pub fn kill_own_group_on(signal: i32) -> io::Result<()> {
    // SAFETY: the action is async-signal-safe: one kill(2) call, no allocation, no lock.
    unsafe {
        signal_hook::low_level::register(signal, || {
            libc::kill(0, libc::SIGKILL);
        })
    }
    .map(drop)
}

/// Makes each `(fd, target)`: `fd` of this process becomes descriptor `target` of the spawned
/// child.
pub fn pass_fds(cmd: &mut Command, fds: &[(RawFd, RawFd)]) {
    assert!(fds.len() <= 8, "pass_fds moves at most 8 descriptors");
    let fds = fds.to_vec();
    // SAFETY: fcntl and dup2 are async-signal-safe, the only kind of call allowed between fork
    // and exec, and the closure allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // First out of the way of every target (a source may sit on another's target),
            // close-on-exec; then onto the targets, where dup2 clears close-on-exec.
            let mut moved = [0; 8];
            for (slot, &(fd, _)) in moved.iter_mut().zip(&fds) {
                *slot = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 64);
                if *slot == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            for (&fd, &(_, target)) in moved.iter().zip(&fds) {
                if libc::dup2(fd, target) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Makes writes to (and reads from) `fd` return `WouldBlock` instead of waiting.
pub fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: fcntl on an open descriptor with integer flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags == -1 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A file of `len` zero bytes that lives only in memory and in the processes that hold it, for
/// memory shared with a child process. Close-on-exec; pass it with [`pass_fds`].
///
/// On Linux its size is sealed: a child cannot shrink it under the parent, whose next access
/// would otherwise be a SIGBUS.
#[cfg(target_os = "linux")]
pub fn shared_memory_file(len: usize) -> io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: memfd_create takes a NUL-terminated name and flags; it returns a new descriptor
    // or -1.
    let fd = unsafe { libc::memfd_create(c"lorch-events".as_ptr(), flags) };
    if fd == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created and is owned by nothing else.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.set_len(len as u64)?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on an open descriptor with integer flags.
    if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

/// Elsewhere, a temporary file unlinked at once.
#[cfg(not(target_os = "linux"))]
pub fn shared_memory_file(len: usize) -> io::Result<std::fs::File> {
    let path = std::env::temp_dir().join(format!(
        "lorch-events-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    file.set_len(len as u64)?;
    Ok(file)
}

/// `SIGSEGV`, `SIGABRT`, ... or `signal N`.
pub fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("signal {signal}"),
    };
    name.to_owned()
}

/// 512, or half the open files limit when that is lower (a descriptor number must be below it).
fn high_fd() -> RawFd {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 3;
    }
    (limit.rlim_cur / 2).clamp(3, 512) as RawFd
}

/// Takes ownership of file descriptor `fd`, inherited from the parent process: moved to a
/// high number (a job that closes descriptors and opens files gets the low ones, so lorch never
/// writes into a file of the job's), close-on-exec so it goes no further.
pub fn inherited_fd(fd: RawFd) -> io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: fcntl duplicates an open descriptor (or fails with EBADF); close releases the
    // inherited number, which nothing else in this process uses.
    let moved = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, high_fd()) };
    if moved == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    unsafe { libc::close(fd) };
    // SAFETY: the descriptor was just made and nothing else owns it.
    Ok(unsafe { std::fs::File::from_raw_fd(moved) })
}

/// `lstat` of `name` in the open directory `dir`: one path component for the kernel to look
/// up instead of the whole path (a directory of 1,000 plugins is 1,000 of these).
pub fn lstat_at(dir: &std::fs::File, name: &std::ffi::OsStr) -> io::Result<libc::stat> {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(name.as_bytes()).map_err(io::Error::other)?;
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `name` is NUL-terminated and `stat` is written by the call when it succeeds.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            stat.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        // SAFETY: fstatat succeeded, so it filled `stat`.
        Ok(unsafe { stat.assume_init() })
    } else {
        Err(io::Error::last_os_error())
    }
}
