//! The write-ahead buffer of remote_write: sample sets wait here, on disk, until the
//! receiver has taken them.
//!
//! Layout, in `<state_dir>/remote_write/`:
//! - `NNNNNNNNNNNNNNNNNNNN.seg`: segments, numbered in the order they were started;
//!   each a run of records `[payload length u32][crc32 u32][id u64][samples u32][payload]`
//!   (little endian; the CRC covers id, samples and payload). A payload is one sample
//!   set as a snappy-compressed `WriteRequest`, ids grow by one per record.
//! - `acked`: the highest id the receiver has accepted (written atomically after each
//!   accepted send); records up to it are not sent again after a restart.
//!
//! Each record is fsynced before [`Wal::append`] returns, so a SIGKILL (or a power cut
//! after the append) loses nothing buffered; a crash between a send and its `acked`
//! update sends that batch again, which Prometheus takes as duplicates (same series,
//! time and value). Segments whose records are all accepted are deleted. The segments
//! never take more than the cap together: before an append that would pass it, the
//! oldest segment is deleted and its unsent samples are counted as dropped.
//!
//! A record that cannot be written (a full disk, an I/O error) is kept in memory
//! instead (bounded; counted), so a reachable receiver still gets it, and the error is
//! counted. At open, a torn or corrupt record ends its segment: the segment is
//! truncated there and the truncation counted (never a panic).
//!
//! All of it is blocking file I/O: the caller runs it off the async runtime's threads.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

/// Bytes before a record's payload.
pub const RECORD_HEADER: u64 = 20;
/// Smallest segment (a small cap still gets several segments).
const MIN_SEGMENT: u64 = 4 * 1024;
/// Largest segment (a segment is deleted as a whole).
const MAX_SEGMENT: u64 = 8 * 1024 * 1024;
/// A payload length above this in a header means the header is garbage.
const MAX_PAYLOAD: u64 = 256 * 1024 * 1024;
/// Most bytes of records kept in memory while the disk refuses them.
pub const MAX_MEMORY_BYTES: u64 = 4 * 1024 * 1024;
/// The file holding the highest accepted id.
const ACKED_FILE: &str = "acked";

/// Counters of what happened to the buffer (they only grow).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WalStats {
    /// Samples dropped because the buffer reached its cap (oldest first).
    pub dropped_buffer_full: u64,
    /// Samples dropped because the disk refused them and the memory overflow was full.
    pub dropped_disk_error: u64,
    /// Samples of records found damaged when read back (counted when known).
    pub dropped_corrupt: u64,
    /// Segments truncated at a torn or corrupt record when the buffer was opened.
    pub corrupt_truncations: u64,
    /// Bytes cut off by those truncations.
    pub truncated_bytes: u64,
    /// Appends the disk refused (a full disk, an I/O error).
    pub write_errors: u64,
    /// Failures to update `acked` or to delete a segment.
    pub housekeeping_errors: u64,
    /// Failures to read a record back.
    pub read_errors: u64,
    /// The last disk error, for logs and health.
    pub last_error: Option<String>,
    /// The error of the last append, while appends fail (the disk is full).
    pub write_failing: Option<String>,
}

#[derive(Debug)]
struct Segment {
    number: u64,
    bytes: u64,
}

#[derive(Debug, Clone)]
enum Place {
    Disk { segment: u64, offset: u64, len: u32 },
    Memory(Bytes),
}

#[derive(Debug, Clone)]
struct Entry {
    id: u64,
    samples: u32,
    place: Place,
}

/// A record handed to the sender.
#[derive(Debug, Clone)]
pub struct Record {
    /// Its id (acknowledge up to it with [`Wal::ack`]).
    pub id: u64,
    /// Samples it holds.
    pub samples: u32,
    /// The compressed `WriteRequest`.
    pub payload: Bytes,
}

/// The buffer. See the module documentation.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    cap: u64,
    segment_target: u64,
    segments: VecDeque<Segment>,
    /// The last segment, open for appending; `None` until the next append starts one.
    writer: Option<File>,
    entries: VecDeque<Entry>,
    next_id: u64,
    acked: u64,
    /// Number of the next segment (numbers never repeat within a run or after one).
    next_segment: u64,
    memory_bytes: u64,
    stats: WalStats,
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}.seg"))
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

fn crc(id: u64, samples: u32, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&id.to_le_bytes());
    hasher.update(&samples.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

impl Wal {
    /// Opens (or creates) the buffer in `dir` with a cap of `cap` bytes of segments:
    /// replays the segments, truncating each at its first damaged record, and deletes
    /// what was already accepted. A directory that cannot be used is an error in the
    /// stats, not a failure: every append is then kept in memory (and counted).
    pub fn open(dir: &Path, cap: u64) -> Wal {
        let mut setup_error = None;
        if let Err(e) = std::fs::create_dir_all(dir) {
            setup_error = Some(io_error("cannot create", dir, e));
        }
        let acked = match std::fs::read_to_string(dir.join(ACKED_FILE)) {
            Ok(text) => text.trim().parse().unwrap_or(0),
            Err(_) => 0,
        };
        let mut numbers = Vec::new();
        let listing = match std::fs::read_dir(dir) {
            Ok(listing) => listing.flatten().collect(),
            Err(e) => {
                setup_error.get_or_insert(io_error("cannot read", dir, e));
                Vec::new()
            }
        };
        for entry in listing {
            let name = entry.file_name();
            let Some(number) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            numbers.push(number);
        }
        numbers.sort_unstable();
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            cap,
            segment_target: (cap / 8).clamp(MIN_SEGMENT, MAX_SEGMENT),
            segments: VecDeque::new(),
            writer: None,
            entries: VecDeque::new(),
            next_id: acked + 1,
            acked,
            next_segment: numbers.last().map_or(1, |n| n + 1),
            memory_bytes: 0,
            stats: WalStats::default(),
        };
        if let Some(message) = setup_error {
            wal.stats.housekeeping_errors += 1;
            wal.note_error(message);
        }
        for number in numbers {
            wal.replay_segment(number);
        }
        // Appends go to a new segment: the last one may end where a crash cut it.
        wal.delete_finished_segments(true);
        wal.make_room(0);
        wal
    }

    fn replay_segment(&mut self, number: u64) {
        let path = segment_path(&self.dir, number);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                self.note_error(io_error("cannot open", &path, e));
                self.stats.read_errors += 1;
                return;
            }
        };
        let length = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut reader = BufReader::new(file);
        let mut offset = 0u64;
        let mut payload = Vec::new();
        let good_end = loop {
            if offset == length {
                break length;
            }
            let mut header = [0u8; RECORD_HEADER as usize];
            if reader.read_exact(&mut header).is_err() {
                break offset;
            }
            let len = u64::from(u32::from_le_bytes([
                header[0], header[1], header[2], header[3],
            ]));
            let stored_crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            let mut id_bytes = [0u8; 8];
            id_bytes.copy_from_slice(&header[8..16]);
            let id = u64::from_le_bytes(id_bytes);
            let samples = u32::from_le_bytes([header[16], header[17], header[18], header[19]]);
            if len > MAX_PAYLOAD || offset + RECORD_HEADER + len > length {
                break offset;
            }
            payload.resize(len as usize, 0);
            if reader.read_exact(&mut payload).is_err() || crc(id, samples, &payload) != stored_crc
            {
                break offset;
            }
            // Ids only grow; a smaller one is not a record of this buffer.
            if id > self.acked && id < self.next_id {
                break offset;
            }
            if id > self.acked {
                self.entries.push_back(Entry {
                    id,
                    samples,
                    place: Place::Disk {
                        segment: number,
                        offset,
                        len: len as u32,
                    },
                });
            }
            self.next_id = self.next_id.max(id + 1);
            offset += RECORD_HEADER + len;
        };
        let mut bytes = length;
        if good_end < length {
            self.stats.corrupt_truncations += 1;
            self.stats.truncated_bytes += length - good_end;
            let truncated = OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(good_end).and_then(|()| f.sync_all()));
            match truncated {
                Ok(()) => bytes = good_end,
                Err(e) => {
                    self.stats.housekeeping_errors += 1;
                    self.note_error(io_error("cannot truncate", &path, e));
                }
            }
            tracing::warn!(
                segment = %path.display(),
                kept_bytes = good_end,
                cut_bytes = length - good_end,
                "Remote-write buffer: a damaged record ends this segment; truncated there."
            );
        }
        self.segments.push_back(Segment { number, bytes });
    }

    fn note_error(&mut self, message: String) {
        self.stats.last_error = Some(message);
    }

    /// Appends one sample set (`payload`, holding `samples` samples), durable on disk
    /// when this returns `Ok`. `Err` is a disk error: the record is then kept in
    /// memory (and counted), so it is still sent.
    pub fn append(&mut self, payload: Bytes, samples: u32) -> Result<(), String> {
        let id = self.next_id;
        self.next_id += 1;
        let record_bytes = RECORD_HEADER + payload.len() as u64;
        if record_bytes > self.cap {
            self.stats.dropped_buffer_full += u64::from(samples);
            return Ok(());
        }
        self.make_room(record_bytes);
        match self.write_record(id, samples, &payload) {
            Ok((segment, offset)) => {
                self.stats.write_failing = None;
                self.entries.push_back(Entry {
                    id,
                    samples,
                    place: Place::Disk {
                        segment,
                        offset,
                        len: payload.len() as u32,
                    },
                });
                Ok(())
            }
            Err(message) => {
                self.stats.write_errors += 1;
                self.note_error(message.clone());
                self.stats.write_failing = Some(message.clone());
                self.memory_bytes += payload.len() as u64;
                self.entries.push_back(Entry {
                    id,
                    samples,
                    place: Place::Memory(payload),
                });
                self.limit_memory();
                Err(message)
            }
        }
    }

    /// Deletes oldest segments until `extra` more bytes fit under the cap.
    fn make_room(&mut self, extra: u64) {
        while self.disk_bytes() + extra > self.cap {
            let Some(oldest) = self.segments.pop_front() else {
                return;
            };
            if self.segments.is_empty() {
                self.writer = None;
            }
            let mut lost = 0u64;
            self.entries.retain(|e| match e.place {
                Place::Disk { segment, .. } if segment == oldest.number => {
                    lost += u64::from(e.samples);
                    false
                }
                _ => true,
            });
            self.stats.dropped_buffer_full += lost;
            self.remove_segment_file(oldest.number);
        }
    }

    fn limit_memory(&mut self) {
        while self.memory_bytes > MAX_MEMORY_BYTES {
            let Some(index) = self
                .entries
                .iter()
                .position(|e| matches!(e.place, Place::Memory(_)))
            else {
                return;
            };
            if let Some(Entry {
                samples,
                place: Place::Memory(payload),
                ..
            }) = self.entries.remove(index)
            {
                self.memory_bytes -= payload.len() as u64;
                self.stats.dropped_disk_error += u64::from(samples);
            }
        }
    }

    fn remove_segment_file(&mut self, number: u64) {
        let path = segment_path(&self.dir, number);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            self.stats.housekeeping_errors += 1;
            self.note_error(io_error("cannot delete", &path, e));
        }
    }

    /// Writes and fsyncs one record at the end of the current segment (starting a new
    /// one when it is full); returns its place. On error the segment is cut back to its
    /// old length (or abandoned when even that fails).
    fn write_record(
        &mut self,
        id: u64,
        samples: u32,
        payload: &[u8],
    ) -> Result<(u64, u64), String> {
        let record_bytes = RECORD_HEADER + payload.len() as u64;
        let roll = match self.segments.back() {
            Some(last) => {
                self.writer.is_none()
                    || (last.bytes > 0 && last.bytes + record_bytes > self.segment_target)
            }
            None => true,
        };
        if roll {
            self.start_segment()?;
        }
        let (number, offset) = match self.segments.back() {
            Some(last) => (last.number, last.bytes),
            None => return Err("no segment".into()),
        };
        let path = segment_path(&self.dir, number);
        let Some(file) = self.writer.as_mut() else {
            return Err("no segment".into());
        };
        let mut record = Vec::with_capacity(record_bytes as usize);
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc(id, samples, payload).to_le_bytes());
        record.extend_from_slice(&id.to_le_bytes());
        record.extend_from_slice(&samples.to_le_bytes());
        record.extend_from_slice(payload);
        let written = file.write_all(&record).and_then(|()| file.sync_data());
        if let Err(e) = written {
            let message = io_error("cannot write", &path, e);
            if file.set_len(offset).is_err() {
                // Appends continue in a new segment; replay cuts this one at the tear.
                self.writer = None;
            }
            return Err(message);
        }
        if let Some(last) = self.segments.back_mut() {
            last.bytes += record_bytes;
        }
        Ok((number, offset))
    }

    fn start_segment(&mut self) -> Result<(), String> {
        let number = self.next_segment;
        self.next_segment += 1;
        let path = segment_path(&self.dir, number);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_error("cannot create", &path, e))?;
        // The new name must survive a power cut too.
        if let Ok(dir) = File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        self.writer = Some(file);
        self.segments.push_back(Segment { number, bytes: 0 });
        Ok(())
    }

    /// The oldest unsent records, at least one (when any) and then as many as fit in
    /// `max_samples`. A record that cannot be read back is dropped and counted.
    pub fn peek(&mut self, max_samples: u64) -> Vec<Record> {
        let mut out = Vec::new();
        let mut total = 0u64;
        let mut index = 0;
        while index < self.entries.len() {
            let entry = self.entries[index].clone();
            if !out.is_empty() && total + u64::from(entry.samples) > max_samples {
                break;
            }
            match self.read(&entry) {
                Ok(payload) => {
                    total += u64::from(entry.samples);
                    out.push(Record {
                        id: entry.id,
                        samples: entry.samples,
                        payload,
                    });
                    index += 1;
                }
                Err(message) => {
                    self.stats.read_errors += 1;
                    self.stats.dropped_corrupt += u64::from(entry.samples);
                    self.note_error(message);
                    self.entries.remove(index);
                }
            }
        }
        out
    }

    fn read(&self, entry: &Entry) -> Result<Bytes, String> {
        match &entry.place {
            Place::Memory(payload) => Ok(payload.clone()),
            Place::Disk {
                segment,
                offset,
                len,
            } => {
                let path = segment_path(&self.dir, *segment);
                let file = File::open(&path).map_err(|e| io_error("cannot open", &path, e))?;
                let mut payload = vec![0u8; *len as usize];
                file.read_exact_at(&mut payload, offset + RECORD_HEADER)
                    .map_err(|e| io_error("cannot read", &path, e))?;
                let mut crc_bytes = [0u8; 4];
                file.read_exact_at(&mut crc_bytes, offset + 4)
                    .map_err(|e| io_error("cannot read", &path, e))?;
                if crc(entry.id, entry.samples, &payload) != u32::from_le_bytes(crc_bytes) {
                    return Err(format!(
                        "{}: record {} is damaged (checksum)",
                        path.display(),
                        entry.id
                    ));
                }
                Ok(payload.into())
            }
        }
    }

    /// Marks every record up to `id` as taken by the receiver (sent, or refused for
    /// good): forgets them, deletes segments left with nothing to send and records the
    /// position in `acked`. Returns the samples of the records that were still here.
    pub fn ack(&mut self, id: u64) -> u64 {
        let mut samples = 0u64;
        while let Some(front) = self.entries.front() {
            if front.id > id {
                break;
            }
            if let Some(entry) = self.entries.pop_front() {
                samples += u64::from(entry.samples);
                if let Place::Memory(payload) = entry.place {
                    self.memory_bytes -= payload.len() as u64;
                }
            }
        }
        if id > self.acked {
            self.acked = id;
            self.write_acked();
        }
        self.delete_finished_segments(false);
        samples
    }

    fn write_acked(&mut self) {
        let path = self.dir.join(ACKED_FILE);
        let tmp = self.dir.join("acked.tmp");
        let written = std::fs::write(&tmp, format!("{}\n", self.acked))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            // A lost update only means that batch is sent again after a restart.
            self.stats.housekeeping_errors += 1;
            self.note_error(io_error("cannot write", &path, e));
        }
    }

    /// Deletes segments none of whose records waits; the one being appended to stays
    /// unless `all`.
    fn delete_finished_segments(&mut self, all: bool) {
        let waiting: std::collections::HashSet<u64> = self
            .entries
            .iter()
            .filter_map(|e| match e.place {
                Place::Disk { segment, .. } => Some(segment),
                Place::Memory(_) => None,
            })
            .collect();
        let current = if all || self.writer.is_none() {
            None
        } else {
            self.segments.back().map(|s| s.number)
        };
        let mut kept = VecDeque::new();
        while let Some(segment) = self.segments.pop_front() {
            if waiting.contains(&segment.number) || Some(segment.number) == current {
                kept.push_back(segment);
            } else {
                self.remove_segment_file(segment.number);
            }
        }
        // Numbers keep growing after the last deleted segment.
        if kept.is_empty() {
            self.writer = None;
        }
        self.segments = kept;
        if all {
            self.writer = None;
        }
    }

    /// Bytes of segments on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Samples waiting to be sent.
    pub fn pending_samples(&self) -> u64 {
        self.entries.iter().map(|e| u64::from(e.samples)).sum()
    }

    /// Records waiting to be sent.
    pub fn pending_records(&self) -> usize {
        self.entries.len()
    }

    /// Bytes of records held in memory because the disk refused them.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_bytes
    }

    /// The counters.
    pub fn stats(&self) -> &WalStats {
        &self.stats
    }

    /// The cap, in bytes.
    pub fn cap(&self) -> u64 {
        self.cap
    }
}
