//! Read-ahead for scans: while an iterator works on block `i`, worker threads load the
//! next `prefetch_distance` blocks into the block cache, so the scan does not wait on
//! disk reads and decompression. Requests are dropped (not queued without bound) when
//! the workers fall behind.

use crate::sst::Table;
use crossbeam_channel::{Sender, TrySendError, bounded};
use parking_lot::Mutex;
use std::sync::Arc;
use std::thread::JoinHandle;

type Request = (Arc<Table>, usize);

pub struct Prefetcher {
    tx: Mutex<Option<Sender<Request>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl Prefetcher {
    /// Start `workers` prefetch threads.
    pub fn start(workers: usize) -> Arc<Self> {
        let (tx, rx) = bounded::<Request>(1024);
        let mut handles = Vec::new();
        for i in 0..workers {
            let rx = rx.clone();
            let h = std::thread::Builder::new()
                .name(format!("ldb-prefetch-{i}"))
                .spawn(move || {
                    while let Ok((t, b)) = rx.recv() {
                        t.prefetch_block(b);
                    }
                })
                .expect("spawning a prefetch thread");
            handles.push(h);
        }
        Arc::new(Prefetcher {
            tx: Mutex::new(Some(tx)),
            workers: Mutex::new(handles),
        })
    }

    /// Ask for block `b` of `t` to be loaded; a no-op after shutdown or when saturated.
    pub fn request(&self, t: &Arc<Table>, b: usize) {
        if let Some(tx) = self.tx.lock().as_ref() {
            match tx.try_send((t.clone(), b)) {
                Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }

    /// Stop accepting requests and join the workers.
    pub fn shutdown(&self) {
        self.tx.lock().take();
        for h in self.workers.lock().drain(..) {
            let _ = h.join();
        }
    }
}
