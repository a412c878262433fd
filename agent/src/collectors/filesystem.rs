//! `filesystem`: node_exporter 1.5's `node_filesystem_{size,free,avail}_bytes` and
//! `node_filesystem_{files,files_free,readonly,device_error}`, labelled
//! `{device,fstype,mountpoint}`.
//!
//! Mounts come from procfs `1/mounts` (or `mounts` when PID 1's is hidden), less those
//! matching `collectors.filesystem.mount_points_exclude` / `fs_types_exclude`. Each one is
//! `statfs(2)`ed at its path under the root filesystem (`--path.rootfs`); the
//! `mountpoint` label is the mount point as the mounts file has it (a leading rootfs
//! prefix is stripped, as node_exporter does). `\040` and `\011` in mount points are
//! decoded to a space and a tab, as node_exporter decodes them. `readonly` is 1 when the
//! options include `ro`. When `statfs` fails, `device_error` is 1 and there is no other
//! sample for that mount (node_exporter 1.5 does the same).
//!
//! A dead NFS server makes `statfs` hang. node_exporter waits 5 s per mount and then
//! remembers the mount as stuck and stops asking it until its call returns. Here the
//! calls run in order on a helper thread (kept between collections); the collector
//! waits [`MOUNT_TIMEOUT`] for each, and when one does not answer in time it is reported
//! with `device_error` 1, remembered as stuck (skipped, still with `device_error` 1,
//! until its call returns), and a new helper thread carries on with the following
//! mounts, so one stuck mount does not hide the others nor hold the collector until
//! the scheduler's timeout.
//!
//! The rules read this collector, so it runs on the 2 s tick. The kernel formats every
//! mount anew for each read of the mounts file, which was most of this collector's cost:
//! the procfs file is kept open instead, and read again only when the kernel marks it
//! changed (`POLLPRI`, as util-linux's mount monitor waits for), or after
//! [`MOUNTS_REREAD`].

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};

use regex_lite::Regex;
use serde::Deserialize;

use super::{BuildError, CollectError, Collector, CollectorOption, CollectorSpec, compile_regex};
use crate::metrics::MetricSink;
use crate::paths::Roots;

/// How long one mount may take to answer `statfs` before it is reported and
/// remembered as stuck. Below node_exporter's 5 s so that a stuck mount is found well
/// within the collector's own timeout (5 s by default).
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(2);

/// Stack of the helper thread: it only makes `statfs` calls.
const STATFS_THREAD_STACK: usize = 128 * 1024;

/// What `statfs` says about a mounted filesystem, in node_exporter's units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// Blocks × block size.
    pub size_bytes: f64,
    /// Free blocks × block size.
    pub free_bytes: f64,
    /// Blocks available to unprivileged users × block size.
    pub avail_bytes: f64,
    /// Inodes.
    pub files: f64,
    /// Free inodes.
    pub files_free: f64,
}

/// The `statfs` call, replaceable in tests by one that hangs.
type StatFn = fn(&Path) -> nix::Result<Usage>;

/// Mount points currently stuck in `statfs`, shared with the helper threads.
type StuckMounts = Arc<Mutex<HashSet<String>>>;

/// Mounts to `statfs` in order: (index in the collection, mount point, path).
type Batch = Vec<(usize, String, PathBuf)>;
/// A batch for the helper, with the call to make.
type Work = (Batch, StatFn, Answers);
/// Where the helper sends each answer: (index, result).
type Answers = mpsc::Sender<(usize, nix::Result<Usage>)>;

/// Longest an open procfs mount table is trusted unread: the kernel's change mark is
/// the signal, this bounds what a missed one could cost.
pub const MOUNTS_REREAD: Duration = Duration::from_secs(60);

/// The procfs mount table kept open between collections: the kernel marks an open
/// mounts file (`POLLPRI`) when anything is mounted or unmounted in its namespace.
#[derive(Debug)]
struct OpenMounts {
    file: File,
    path: PathBuf,
    read_at: Instant,
}

impl OpenMounts {
    /// Whether the table may differ from its last read.
    fn may_have_changed(&self) -> bool {
        if self.read_at.elapsed() >= MOUNTS_REREAD {
            return true;
        }
        let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::POLLPRI)];
        match nix::poll::poll(&mut fds, PollTimeout::ZERO) {
            Ok(_) => fds[0]
                .revents()
                .is_none_or(|r| r.intersects(PollFlags::POLLPRI | PollFlags::POLLERR)),
            Err(_) => true,
        }
    }
}

/// Reads `file` from its start.
fn read_from_start(file: &mut File) -> std::io::Result<String> {
    file.seek(SeekFrom::Start(0))?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok(text)
}

/// Reads the mount table and `statfs`es each mount.
#[derive(Debug)]
pub struct FilesystemCollector {
    roots: Roots,
    mount_points_exclude: Regex,
    fs_types_exclude: Regex,
    stuck: StuckMounts,
    statfs: StatFn,
    mount_timeout: Duration,
    /// The last mount table read and the mounts it selected: an unchanged table (the
    /// usual case) is not parsed and matched again.
    selected: Mutex<(String, Arc<Vec<Mount>>)>,
    /// The procfs mount table behind `selected`, open; `None` before a good read, or
    /// when the table is not on procfs (a fixture), which is then read every time.
    open_mounts: Mutex<Option<OpenMounts>>,
    /// The helper thread waiting for the next batch, if one is.
    helper: Mutex<Option<mpsc::Sender<Work>>>,
}

/// node_exporter 1.5's default `--collector.filesystem.mount-points-exclude`.
pub const DEFAULT_MOUNT_POINTS_EXCLUDE: &str =
    "^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)";
/// node_exporter 1.5's default `--collector.filesystem.fs-types-exclude`.
pub const DEFAULT_FS_TYPES_EXCLUDE: &str = "^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|sysfs|tracefs)$";
/// Filesystem collector filters (regular expressions, unanchored as in node_exporter).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FilesystemConfig {
    /// Mount points to leave out. Default: node_exporter's.
    pub mount_points_exclude: String,
    /// Filesystem types to leave out. Default: node_exporter's.
    pub fs_types_exclude: String,
}

impl Default for FilesystemConfig {
    fn default() -> Self {
        Self {
            mount_points_exclude: DEFAULT_MOUNT_POINTS_EXCLUDE.into(),
            fs_types_exclude: DEFAULT_FS_TYPES_EXCLUDE.into(),
        }
    }
}

/// The `filesystem` collector: `[collectors.filesystem]`.
pub const SPEC: CollectorSpec = CollectorSpec::system("filesystem", |ctx| {
    let config: FilesystemConfig = ctx.section("filesystem", "collectors.filesystem")?;
    Ok(Box::new(FilesystemCollector::new(
        ctx.roots.clone(),
        &config,
    )?))
})
.with_section(
    "collectors.filesystem",
    &[
        CollectorOption {
            flag: "mount-points-exclude",
            aliases: &["ignored-mount-points"],
            key: "mount_points_exclude",
            value_name: "REGEX",
            help: "Mount points to leave out (regular expression).",
        },
        CollectorOption {
            flag: "fs-types-exclude",
            aliases: &["ignored-fs-types"],
            key: "fs_types_exclude",
            value_name: "REGEX",
            help: "Filesystem types to leave out (regular expression).",
        },
    ],
);

impl FilesystemCollector {
    /// A collector reading under `roots`; fails when an exclusion is not a valid regular
    /// expression.
    pub fn new(roots: Roots, config: &FilesystemConfig) -> Result<Self, BuildError> {
        Ok(Self {
            roots,
            mount_points_exclude: compile_regex(
                "filesystem",
                "collectors.filesystem.mount_points_exclude",
                &config.mount_points_exclude,
            )?,
            fs_types_exclude: compile_regex(
                "filesystem",
                "collectors.filesystem.fs_types_exclude",
                &config.fs_types_exclude,
            )?,
            stuck: StuckMounts::default(),
            statfs: statfs_usage,
            mount_timeout: MOUNT_TIMEOUT,
            selected: Mutex::default(),
            open_mounts: Mutex::default(),
            helper: Mutex::default(),
        })
    }

    /// PID 1's mount table, or the system's when PID 1's is hidden (`hidepid`): its
    /// text, path and open file.
    fn read_mounts(&self) -> Result<(String, PathBuf, File), CollectError> {
        let path = self.roots.proc("1/mounts");
        let (path, mut file) = match File::open(&path) {
            Ok(file) => (path, file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(path = %path.display(), "Falling back to the system mounts.");
                let path = self.roots.proc("mounts");
                let file = File::open(&path).map_err(|e| CollectError::io(&path, e))?;
                (path, file)
            }
            Err(e) => return Err(CollectError::io(&path, e)),
        };
        let text = read_from_start(&mut file).map_err(|e| CollectError::io(&path, e))?;
        Ok((text, path, file))
    }

    /// The mount point as labelled: without the rootfs prefix, if it has one.
    fn strip_rootfs(&self, mount_point: String) -> String {
        if self.roots.rootfs == Path::new("/") {
            return mount_point;
        }
        match Path::new(&mount_point).strip_prefix(&self.roots.rootfs) {
            Ok(rest) => format!("/{}", rest.to_string_lossy()),
            Err(_) => mount_point,
        }
    }

    fn lock_stuck(&self) -> MutexGuard<'_, HashSet<String>> {
        lock(&self.stuck)
    }

    /// `statfs` of each mount, in order; `None` where it failed, timed out or is stuck.
    fn stat_all(&self, mounts: &[Mount]) -> Result<Vec<Option<Usage>>, CollectError> {
        let mut results = vec![None; mounts.len()];
        // (index in `mounts`, mount point, path under rootfs), in order.
        let mut pending: VecDeque<(usize, String, PathBuf)> = VecDeque::new();
        {
            let stuck = self.lock_stuck();
            for (index, mount) in mounts.iter().enumerate() {
                if stuck.contains(&mount.mount_point) {
                    tracing::debug!(
                        mountpoint = mount.mount_point.as_str(),
                        "Mount point is in an unresponsive state."
                    );
                    continue;
                }
                let path = self.roots.root(&mount.mount_point);
                pending.push_back((index, mount.mount_point.clone(), path));
            }
        }
        while !pending.is_empty() {
            let answers = self.spawn_statfs_thread(pending.iter().cloned().collect())?;
            while let Some((index, mount_point, path)) = pending.front().cloned() {
                let answer = match answers.recv_timeout(self.mount_timeout) {
                    Ok(answer) => answer,
                    Err(RecvTimeoutError::Timeout) => {
                        let mut stuck = self.lock_stuck();
                        // The answer may have come in just now; the helper sends only
                        // after taking this lock, so after this check it cannot.
                        if let Ok(answer) = answers.try_recv() {
                            answer
                        } else {
                            tracing::debug!(
                                mountpoint = mount_point.as_str(),
                                "Mount point timed out, it is being labeled as stuck and will not be monitored."
                            );
                            stuck.insert(mount_point.clone());
                            // The helper is stuck: the next batch goes to a new one.
                            lock(&self.helper).take();
                            pending.pop_front();
                            // Another entry for the same mount point would hang as well.
                            pending.retain(|(_, other, _)| !stuck.contains(other));
                            // The helper is stuck: a new one carries on with the rest.
                            break;
                        }
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        return Err(CollectError::Other(
                            "the statfs thread ended before answering".into(),
                        ));
                    }
                };
                let (answered, result) = answer;
                debug_assert_eq!(answered, index);
                match result {
                    Ok(usage) => results[index] = Some(usage),
                    Err(errno) => tracing::debug!(
                        path = %path.display(),
                        error = %errno,
                        "Error on statfs() system call."
                    ),
                }
                pending.pop_front();
            }
        }
        Ok(results)
    }

    /// Gives `batch` to the waiting helper thread, or to a new one, which `statfs`es it
    /// in order and sends each answer.
    fn spawn_statfs_thread(
        &self,
        batch: Batch,
    ) -> Result<mpsc::Receiver<(usize, nix::Result<Usage>)>, CollectError> {
        let (answers, receiver) = mpsc::channel();
        let mut helper = lock(&self.helper);
        let work = (batch, self.statfs, answers);
        let work = match helper.as_ref() {
            Some(waiting) => match waiting.send(work) {
                Ok(()) => return Ok(receiver),
                // It ended (a mount it was stuck in recovered): start another.
                Err(mpsc::SendError(work)) => work,
            },
            None => work,
        };
        let (batches, next) = mpsc::channel();
        batches
            .send(work)
            .map_err(|_| CollectError::Other("statfs helper channel closed".into()))?;
        let stuck = Arc::clone(&self.stuck);
        std::thread::Builder::new()
            .name("nodewatch-statfs".into())
            .stack_size(STATFS_THREAD_STACK)
            .spawn(move || statfs_helper(&next, &stuck))
            .map_err(|e| CollectError::Other(format!("cannot start a statfs thread: {e}")))?;
        *helper = Some(batches);
        Ok(receiver)
    }
}

/// The helper thread: `statfs`es each batch in order and sends each answer, unless the
/// collector has meanwhile given up on that mount as stuck: then the mount has
/// recovered, and the thread ends (the collector has a new helper by then). Ends too
/// when the collector drops its side.
fn statfs_helper(batches: &mpsc::Receiver<Work>, stuck: &StuckMounts) {
    while let Ok((batch, statfs, answers)) = batches.recv() {
        for (index, mount_point, path) in batch {
            let result = statfs(&path);
            let mut stuck = lock(stuck);
            if stuck.remove(&mount_point) {
                tracing::debug!(
                    mountpoint = mount_point.as_str(),
                    "Mount point has recovered, monitoring will resume."
                );
                return;
            }
            drop(stuck);
            if answers.send((index, result)).is_err() {
                break;
            }
        }
    }
}

impl FilesystemCollector {
    /// The mounts to report: the mount table less the excluded, each mount point once.
    fn selected_mounts(&self) -> Result<Arc<Vec<Mount>>, CollectError> {
        let mut open = lock(&self.open_mounts);
        if open.as_ref().is_some_and(|o| !o.may_have_changed()) {
            return Ok(lock(&self.selected).1.clone());
        }
        // Kept open only after a good read and parse, below.
        let (text, path, file) = match open.take() {
            Some(mut o) => match read_from_start(&mut o.file) {
                Ok(text) => (text, o.path, o.file),
                Err(e) => return Err(CollectError::io(&o.path, e)),
            },
            None => self.read_mounts()?,
        };
        let mounts = self.select(text, &path)?;
        let on_procfs = nix::sys::statfs::fstatfs(&file)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC);
        if on_procfs {
            // A change since the file was opened is still marked (only a poll clears
            // the mark), so none is missed between the read and the next poll.
            *open = Some(OpenMounts {
                file,
                path,
                read_at: Instant::now(),
            });
        }
        Ok(mounts)
    }

    /// The mounts of the table `text` that pass the filters; an unchanged table (the
    /// usual case) is not parsed and matched again.
    fn select(&self, text: String, path: &Path) -> Result<Arc<Vec<Mount>>, CollectError> {
        let mut selected = lock(&self.selected);
        if selected.0 == text {
            return Ok(selected.1.clone());
        }
        let mut seen: HashSet<(String, String, String)> = HashSet::new();
        let mut mounts = Vec::new();
        for mut mount in parse_mounts(&text, path)? {
            mount.mount_point = self.strip_rootfs(mount.mount_point);
            if self.mount_points_exclude.is_match(&mount.mount_point)
                || self.fs_types_exclude.is_match(&mount.fs_type)
            {
                continue;
            }
            // A mount point listed twice is exported once, as node_exporter does.
            let key = (
                mount.device.clone(),
                mount.mount_point.clone(),
                mount.fs_type.clone(),
            );
            if seen.insert(key) {
                mounts.push(mount);
            }
        }
        let mounts = Arc::new(mounts);
        *selected = (text, mounts.clone());
        Ok(mounts)
    }
}

impl Collector for FilesystemCollector {
    fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
        let mounts = self.selected_mounts()?;
        let usages = self.stat_all(&mounts)?;
        for (mount, usage) in mounts.iter().zip(usages) {
            let labels = [
                ("device", mount.device.as_str()),
                ("fstype", mount.fs_type.as_str()),
                ("mountpoint", mount.mount_point.as_str()),
            ];
            let gauge = |out: &mut MetricSink, name: &str, help: &str, value: f64| {
                out.gauge(name, help, &labels, value);
            };
            gauge(
                out,
                "node_filesystem_device_error",
                "Whether an error occurred while getting statistics for the given device.",
                if usage.is_some() { 0.0 } else { 1.0 },
            );
            // As node_exporter 1.5: a mount whose statfs failed has device_error only.
            let Some(usage) = usage else {
                continue;
            };
            gauge(
                out,
                "node_filesystem_readonly",
                "Filesystem read-only status.",
                if mount.is_read_only() { 1.0 } else { 0.0 },
            );
            gauge(
                out,
                "node_filesystem_size_bytes",
                "Filesystem size in bytes.",
                usage.size_bytes,
            );
            gauge(
                out,
                "node_filesystem_free_bytes",
                "Filesystem free space in bytes.",
                usage.free_bytes,
            );
            gauge(
                out,
                "node_filesystem_avail_bytes",
                "Filesystem space available to non-root users in bytes.",
                usage.avail_bytes,
            );
            gauge(
                out,
                "node_filesystem_files",
                "Filesystem total file nodes.",
                usage.files,
            );
            gauge(
                out,
                "node_filesystem_files_free",
                "Filesystem total free file nodes.",
                usage.files_free,
            );
        }
        Ok(())
    }
}

/// One line of a mounts file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The mounted device (`/dev/mmcblk0p2`, `tmpfs`), as written.
    pub device: String,
    /// Where it is mounted, with `\040` and `\011` decoded.
    pub mount_point: String,
    /// Filesystem type (`ext4`).
    pub fs_type: String,
    /// Mount options (`rw,noatime`).
    pub options: String,
}

impl Mount {
    /// Whether the options include `ro`.
    pub fn is_read_only(&self) -> bool {
        self.options.split(',').any(|option| option == "ro")
    }
}

/// Parses a mounts file (`/dev/root / ext4 rw,noatime 0 0`).
pub fn parse_mounts(text: &str, path: &Path) -> Result<Vec<Mount>, CollectError> {
    let mut mounts = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let [device, mount_point, fs_type, options, ..] = fields[..] else {
            return Err(CollectError::parse(
                path,
                Some(index + 1),
                format!("malformed mount point information: {line:?}"),
            ));
        };
        mounts.push(Mount {
            device: device.to_string(),
            mount_point: decode_mount_point(mount_point),
            fs_type: fs_type.to_string(),
            options: options.to_string(),
        });
    }
    Ok(mounts)
}

/// Decodes the octal escapes node_exporter 1.5 decodes in mount points: `\040` (space)
/// and `\011` (tab). Others (`\134` for a backslash) stay as written, as there.
pub fn decode_mount_point(raw: &str) -> String {
    if !raw.contains('\\') {
        return raw.to_string();
    }
    raw.replace("\\040", " ").replace("\\011", "\t")
}

/// `statfs(2)` in node_exporter's units: blocks times the block size `f_bsize`.
fn statfs_usage(path: &Path) -> nix::Result<Usage> {
    let stat = nix::sys::statfs::statfs(path)?;
    let block_size = stat.block_size() as f64;
    Ok(Usage {
        size_bytes: stat.blocks() as f64 * block_size,
        free_bytes: stat.blocks_free() as f64 * block_size,
        avail_bytes: stat.blocks_available() as f64 * block_size,
        files: stat.files() as f64,
        files_free: stat.files_free() as f64,
    })
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // What it guards stays consistent even if a holder panicked.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::collectors::test_support::*;

    const LITERAL: &str = "\
/dev/root / ext4 rw,noatime 0 0
devtmpfs /dev devtmpfs rw,relatime,size=1867796k,nr_inodes=466949,mode=755 0 0
proc /proc proc rw,relatime 0 0
/dev/mmcblk0p1 /boot/firmware vfat ro,relatime,fmask=0022 0 0
/dev/sda1 /mnt/usb\\040disk\\011x ext4 rw 0 0
tmpfs /run tmpfs rw,nosuid,nodev,size=388200k,mode=755 0 0
";

    fn collector(roots: Roots) -> FilesystemCollector {
        FilesystemCollector::new(roots, &FilesystemConfig::default()).expect("default config")
    }

    #[test]
    fn parses_literal() {
        let mounts = parse_mounts(LITERAL, Path::new("mounts")).expect("parse");
        assert_eq!(mounts.len(), 6);
        assert_eq!(
            mounts[0],
            Mount {
                device: "/dev/root".into(),
                mount_point: "/".into(),
                fs_type: "ext4".into(),
                options: "rw,noatime".into(),
            }
        );
        assert!(mounts[3].is_read_only());
        assert!(!mounts[0].is_read_only());
        assert_eq!(mounts[4].mount_point, "/mnt/usb disk\tx");
        assert_eq!(decode_mount_point("/a\\134b"), "/a\\134b");
    }

    #[test]
    fn a_fixture_mount_table_is_read_at_every_collection() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("data")).expect("mkdir");
        write(dir.path(), "proc/1/mounts", "/dev/root / ext4 rw 0 0\n");
        let collector = collector(Roots::under(dir.path()));
        let first = collect_text(&collector);
        assert!(first.contains("mountpoint=\"/\""), "{first}");
        assert!(!first.contains("/data"), "{first}");
        // Not procfs: nothing marks a change, so the file is read again.
        write(
            dir.path(),
            "proc/1/mounts",
            "/dev/root / ext4 rw 0 0\n/dev/sda1 /data ext4 rw 0 0\n",
        );
        let second = collect_text(&collector);
        assert!(second.contains("mountpoint=\"/data\""), "{second}");
        assert!(lock(&collector.open_mounts).is_none());
    }

    /// In a private mount namespace of its own thread (needs CAP_SYS_ADMIN, as the
    /// suite's dockerd does): the open procfs table is read again only once the
    /// kernel marks a mount.
    #[test]
    fn the_procfs_mount_table_is_read_again_when_the_kernel_marks_a_change() {
        std::thread::spawn(|| {
            use nix::mount::{MntFlags, MsFlags, mount, umount2};
            use nix::sched::{CloneFlags, unshare};
            unshare(CloneFlags::CLONE_FS | CloneFlags::CLONE_NEWNS).expect("unshare (root?)");
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .expect("make / private");
            let target = tempfile::tempdir().expect("tempdir");
            let root = tempfile::tempdir().expect("tempdir");
            // procfs of this thread's namespace at ROOT/proc/1 (the collector's path).
            std::fs::create_dir_all(root.path().join("proc")).expect("mkdir");
            std::os::unix::fs::symlink("/proc/thread-self", root.path().join("proc/1"))
                .expect("symlink");
            let roots = Roots {
                rootfs: "/".into(),
                ..Roots::under(root.path())
            };
            let config = FilesystemConfig {
                fs_types_exclude: "^$".into(),
                mount_points_exclude: "^$".into(),
            };
            let collector = FilesystemCollector::new(roots, &config).expect("collector");
            let name = target.path().to_string_lossy().to_string();
            let before = collect_text(&collector);
            assert!(!before.contains(&name), "{before}");
            {
                let open = lock(&collector.open_mounts);
                let open = open.as_ref().expect("procfs: kept open");
                assert!(!open.may_have_changed(), "nothing mounted yet");
            }
            mount(
                Some("tmpfs"),
                target.path(),
                Some("tmpfs"),
                MsFlags::empty(),
                None::<&str>,
            )
            .expect("mount tmpfs");
            let after = collect_text(&collector);
            assert!(after.contains(&name), "{after}");
            umount2(target.path(), MntFlags::MNT_DETACH).expect("umount");
            let unmounted = collect_text(&collector);
            assert!(!unmounted.contains(&name), "{unmounted}");
        })
        .join()
        .expect("test thread");
    }

    #[test]
    fn rejects_malformed_line() {
        let err = parse_mounts(
            "/dev/root / ext4 rw 0 0\n/dev/sda1 /mnt\n",
            Path::new("x/mounts"),
        )
        .expect_err("short");
        assert_eq!(
            err.to_string(),
            "cannot parse x/mounts line 2: malformed mount point information: \"/dev/sda1 /mnt\""
        );
    }

    #[test]
    fn bad_regex_is_a_build_error() {
        let config = FilesystemConfig {
            fs_types_exclude: "[".into(),
            ..FilesystemConfig::default()
        };
        let err = FilesystemCollector::new(Roots::default(), &config).expect_err("bad regex");
        assert!(err.to_string().contains("fs_types_exclude"), "{err}");
    }

    #[test]
    fn missing_mounts_is_no_data() {
        let err = collector(Roots::under("/nonexistent-nodewatch-root"))
            .collect(&mut MetricSink::new())
            .expect_err("missing");
        assert!(err.is_no_data(), "{err}");
    }

    /// A tree whose `proc/mounts` (no `proc/1/mounts`) lists the tree's root, a read-only
    /// mount that exists, one that does not, and excluded ones.
    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("proc")).expect("mkdir");
        std::fs::create_dir_all(root.join("mnt/usb disk")).expect("mkdir");
        std::fs::write(
            root.join("proc/mounts"),
            "/dev/root / ext4 rw,noatime 0 0\n\
             /dev/root / ext4 rw,noatime 0 0\n\
             proc /proc proc rw 0 0\n\
             sysfs /sys sysfs rw 0 0\n\
             /dev/sda1 /mnt/usb\\040disk ext4 ro,relatime 0 0\n\
             /dev/mmcblk0p1 /boot/firmware vfat ro,relatime 0 0\n\
             overlay /var/lib/docker/overlay2/x/merged overlay rw 0 0\n",
        )
        .expect("write");
        dir
    }

    #[test]
    fn reads_mounts_and_statfs() {
        let dir = tree();
        let text = collect_text(&collector(Roots::under(dir.path())));
        let root = "device=\"/dev/root\",fstype=\"ext4\",mountpoint=\"/\"";
        let usb = "device=\"/dev/sda1\",fstype=\"ext4\",mountpoint=\"/mnt/usb disk\"";
        let boot = "device=\"/dev/mmcblk0p1\",fstype=\"vfat\",mountpoint=\"/boot/firmware\"";
        assert_eq!(
            value_of(&text, &format!("node_filesystem_device_error{{{root}}}")),
            0.0
        );
        assert_eq!(
            value_of(&text, &format!("node_filesystem_readonly{{{root}}}")),
            0.0
        );
        assert!(value_of(&text, &format!("node_filesystem_size_bytes{{{root}}}")) > 0.0);
        assert!(value_of(&text, &format!("node_filesystem_files{{{root}}}")) >= 0.0);
        assert_eq!(
            value_of(&text, &format!("node_filesystem_readonly{{{usb}}}")),
            1.0
        );
        assert!(value_of(&text, &format!("node_filesystem_avail_bytes{{{usb}}}")) >= 0.0);
        // Not under the root: statfs fails.
        assert_eq!(
            value_of(&text, &format!("node_filesystem_device_error{{{boot}}}")),
            1.0
        );
        assert!(!text.contains(&format!("node_filesystem_readonly{{{boot}}}")));
        assert!(!text.contains(&format!("node_filesystem_size_bytes{{{boot}}}")));
        // Excluded, and the duplicate exported once.
        assert!(!text.contains("/proc\""), "{text}");
        assert!(!text.contains("docker"), "{text}");
        assert_eq!(
            text.matches("node_filesystem_size_bytes{").count(),
            2,
            "{text}"
        );
    }

    #[test]
    fn strips_rootfs_prefix() {
        let roots = Roots {
            rootfs: "/host".into(),
            ..Roots::default()
        };
        let collector = collector(roots);
        assert_eq!(collector.strip_rootfs("/host".into()), "/");
        assert_eq!(collector.strip_rootfs("/host/boot".into()), "/boot");
        assert_eq!(collector.strip_rootfs("/hostile".into()), "/hostile");
        assert_eq!(collector.strip_rootfs("/boot".into()), "/boot");
    }

    /// A `statfs` that hangs for 600 ms on mount points whose path contains `hang`.
    fn hanging_statfs(path: &Path) -> nix::Result<Usage> {
        if path.ends_with("hang") {
            std::thread::sleep(Duration::from_millis(600));
        }
        Ok(Usage {
            size_bytes: 1.0,
            free_bytes: 2.0,
            avail_bytes: 3.0,
            files: 4.0,
            files_free: 5.0,
        })
    }

    #[test]
    fn a_stuck_mount_does_not_hide_the_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("proc/1")).expect("mkdir");
        std::fs::write(
            dir.path().join("proc/1/mounts"),
            "a /one ext4 rw 0 0\nnfs /hang nfs4 ro 0 0\nb /two ext4 rw 0 0\n",
        )
        .expect("write");
        let mut collector = collector(Roots::under(dir.path()));
        collector.statfs = hanging_statfs;
        collector.mount_timeout = Duration::from_millis(100);
        let hang = "device=\"nfs\",fstype=\"nfs4\",mountpoint=\"/hang\"";
        let two = "device=\"b\",fstype=\"ext4\",mountpoint=\"/two\"";

        let started = Instant::now();
        let text = collect_text(&collector);
        assert!(started.elapsed() < Duration::from_millis(500));
        assert_eq!(
            value_of(&text, &format!("node_filesystem_device_error{{{hang}}}")),
            1.0
        );
        assert!(!text.contains(&format!("node_filesystem_size_bytes{{{hang}}}")));
        // The mount after the stuck one is still there.
        assert_eq!(
            value_of(&text, &format!("node_filesystem_size_bytes{{{two}}}")),
            1.0
        );
        assert_eq!(
            value_of(&text, &format!("node_filesystem_device_error{{{two}}}")),
            0.0
        );

        // While stuck, it is not asked again: no wait at all.
        let started = Instant::now();
        let text = collect_text(&collector);
        assert!(started.elapsed() < Duration::from_millis(90));
        assert_eq!(
            value_of(&text, &format!("node_filesystem_device_error{{{hang}}}")),
            1.0
        );

        // Once its call returns, it is monitored again.
        std::thread::sleep(Duration::from_millis(700));
        assert!(collector.lock_stuck().is_empty());
        collector.statfs = |_| {
            Ok(Usage {
                size_bytes: 9.0,
                free_bytes: 9.0,
                avail_bytes: 9.0,
                files: 9.0,
                files_free: 9.0,
            })
        };
        let text = collect_text(&collector);
        assert_eq!(
            value_of(&text, &format!("node_filesystem_device_error{{{hang}}}")),
            0.0
        );
        assert_eq!(
            value_of(&text, &format!("node_filesystem_readonly{{{hang}}}")),
            1.0
        );
        assert_eq!(
            value_of(&text, &format!("node_filesystem_size_bytes{{{hang}}}")),
            9.0
        );
    }

    /// Debian's node_exporter 1.5 default `--collector.filesystem.mount-points-exclude`.
    const DEBIAN_MOUNT_POINTS_EXCLUDE: &str =
        "^/(dev|proc|run|sys|mnt|media|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)";

    /// Compares with node_exporter's samples of the families whose values do not depend
    /// on the machine the test runs on: `device_error` and `readonly`. Sizes and inode counts of mounts
    /// that exist in the tree (its `/`) are those of the filesystem the checkout is on,
    /// so for them only the set of series is compared.
    ///
    /// The references were made with Debian's node_exporter defaults, whose
    /// mount-points-exclude also drops `/run`, `/mnt` and `/media`; our default is
    /// upstream 1.5's, so the comparison uses Debian's.
    fn same_as_node_exporter(tree: &str) {
        let config = FilesystemConfig {
            mount_points_exclude: DEBIAN_MOUNT_POINTS_EXCLUDE.into(),
            ..FilesystemConfig::default()
        };
        let collector =
            FilesystemCollector::new(fixture_roots(tree), &config).expect("Debian's exclusion");
        let text = collect_text(&collector);
        assert_same_as_node_exporter(
            tree,
            &text,
            &["node_filesystem_device_error", "node_filesystem_readonly"],
        );
        let reference = std::fs::read_to_string(fixture_dir(tree).join("node_exporter-1.5.prom"))
            .expect("reference");
        let theirs = parse_samples(&reference);
        let ours = parse_samples(&text);
        for family in [
            "node_filesystem_size_bytes",
            "node_filesystem_free_bytes",
            "node_filesystem_avail_bytes",
            "node_filesystem_files",
            "node_filesystem_files_free",
        ] {
            let series = |samples: &std::collections::BTreeMap<String, f64>| -> Vec<String> {
                samples
                    .keys()
                    .filter(|k| k.split('{').next() == Some(family))
                    .cloned()
                    .collect()
            };
            assert_eq!(series(&ours), series(&theirs), "{family} on {tree}");
        }
    }

    #[test]
    fn same_as_node_exporter_on_pi_fixture() {
        same_as_node_exporter("pi");
    }

    #[test]
    fn same_as_node_exporter_on_linux_fixture() {
        same_as_node_exporter("linux");
    }
}
