//! The few operating-system calls std does not offer, each wrapped once so the rest of lorch
//! stays safe code. Unix only, like the plugin loader.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

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

/// The effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and has no preconditions.
    unsafe { libc::geteuid() }
}

/// Makes the kernel kill this process when its parent dies, so a worker never outlives a
/// `kill -9`ed lorch. Linux only; elsewhere a no-op.
pub fn die_with_parent() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and has no memory effects.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
}

/// Marks `fd` close-on-exec, so processes the job starts do not inherit it.
pub fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own; F_SETFD takes an int flag.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
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

/// Takes ownership of file descriptor `fd`, inherited from the parent process, and marks it
/// close-on-exec so it goes no further.
pub fn inherited_fd(fd: RawFd) -> io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: F_GETFD only queries the descriptor, failing with EBADF when it is not open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(io::Error::last_os_error());
    }
    set_cloexec(fd)?;
    // SAFETY: the descriptor is open and nothing else in this process owns it: it was given to
    // us by the parent for exactly this use.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}
