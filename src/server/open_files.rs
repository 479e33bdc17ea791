//! The open-files limit and the connection caps (issue 21). With a soft limit of 1,024 and the
//! default cap of 4,096 HTTPS connections, a flood of idle connections made `accept` fail with
//! EMFILE, and then the admin port could not accept the kubelet's probes either. At start-up the
//! soft limit is raised to the hard one (as the Go runtime does), and the HTTPS cap is lowered,
//! with a warning, to what the limit leaves after the admin port's connections and a reserve
//! for everything else (files, connections to the API server and EKS, the runtime).

/// Descriptors kept for everything but client connections.
pub const RESERVED_DESCRIPTORS: u64 = 256;

/// Raises the soft limit on open files to the hard limit; the soft limit now in force, `None`
/// when it cannot be read.
pub fn raise_open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given. It fails (and nothing changes) when
        // the hard limit is above what the kernel allows (`RLIM_INFINITY`, `nr_open`).
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Some(limit.rlim_max);
        }
    }
    Some(limit.rlim_cur)
}

/// The HTTPS connection cap that fits `open_files` descriptors: the configured one, or what
/// is left after the admin port's cap and [`RESERVED_DESCRIPTORS`] (at least 1).
pub fn fitting_cap(configured: usize, admin: usize, open_files: u64) -> usize {
    let room = open_files.saturating_sub(RESERVED_DESCRIPTORS + admin as u64);
    configured.min(usize::try_from(room).unwrap_or(usize::MAX).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_https_cap_is_lowered_to_what_the_limit_leaves() {
        assert_eq!(fitting_cap(4096, 64, 1_048_576), 4096);
        assert_eq!(fitting_cap(4096, 64, 1024), 1024 - 256 - 64);
        assert_eq!(fitting_cap(100, 64, 1024), 100);
        assert_eq!(fitting_cap(4096, 64, 100), 1);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let now = raise_open_files_limit().unwrap();
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(now, limit.rlim_cur);
    }
}
