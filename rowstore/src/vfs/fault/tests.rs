use super::*;

fn setup() -> (tempfile::TempDir, FaultVfs) {
    (tempfile::tempdir().unwrap(), FaultVfs::new())
}

#[test]
fn unsynced_data_and_names_are_lost_synced_ones_survive() {
    let (d, vfs) = setup();
    let dir = d.path();
    let a = dir.join("a");
    let f = vfs.create(&a).unwrap();
    f.append(b"durable").unwrap();
    f.sync_data().unwrap();
    vfs.sync_dir(dir).unwrap();
    f.append(b" lost").unwrap();
    let b = dir.join("b");
    let g = vfs.create(&b).unwrap();
    g.append(b"never synced dir").unwrap();
    g.sync_data().unwrap();
    vfs.power_loss(PowerLoss::Clean).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), b"durable");
    assert!(
        !b.exists(),
        "a name whose directory was never synced is lost"
    );
    assert!(vfs.create(&dir.join("c")).is_err(), "dead after power loss");
    vfs.revive();
    assert!(vfs.create(&dir.join("c")).is_ok());
}

#[test]
fn rename_without_directory_sync_reverts_to_the_old_file() {
    let (d, vfs) = setup();
    let dir = d.path();
    let cur = dir.join("CURRENT");
    let f = vfs.create(&dir.join("CURRENT.tmp")).unwrap();
    f.append(b"one").unwrap();
    f.sync_data().unwrap();
    vfs.rename(&dir.join("CURRENT.tmp"), &cur).unwrap();
    vfs.sync_dir(dir).unwrap();
    let f = vfs.create(&dir.join("CURRENT.tmp")).unwrap();
    f.append(b"two").unwrap();
    f.sync_data().unwrap();
    vfs.rename(&dir.join("CURRENT.tmp"), &cur).unwrap();
    assert_eq!(std::fs::read(&cur).unwrap(), b"two");
    vfs.power_loss(PowerLoss::Clean).unwrap();
    assert_eq!(std::fs::read(&cur).unwrap(), b"one");
}

#[test]
fn removal_without_directory_sync_is_undone() {
    let (d, vfs) = setup();
    let p = d.path().join("x");
    let f = vfs.create(&p).unwrap();
    f.append(b"keep").unwrap();
    f.sync_data().unwrap();
    vfs.sync_dir(d.path()).unwrap();
    vfs.remove(&p).unwrap();
    assert!(!p.exists());
    vfs.power_loss(PowerLoss::Clean).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"keep");
}

#[test]
fn torn_power_loss_keeps_some_pages() {
    let (d, vfs) = setup();
    let p = d.path().join("t");
    let f = vfs.create(&p).unwrap();
    f.allocate(16 * PAGE).unwrap();
    f.sync_data().unwrap();
    vfs.sync_dir(d.path()).unwrap();
    f.write_at(&vec![1u8; (16 * PAGE) as usize], 0).unwrap();
    vfs.power_loss(PowerLoss::Torn { seed: 7 }).unwrap();
    let data = std::fs::read(&p).unwrap();
    assert_eq!(data.len() as u64, 16 * PAGE);
    let new = data.chunks(PAGE as usize).filter(|c| c[0] == 1).count();
    assert!(new > 0 && new < 16, "{new} of 16 pages kept");
    for c in data.chunks(PAGE as usize) {
        assert!(c.iter().all(|&b| b == c[0]), "pages are whole");
    }
}

#[test]
fn rules_fail_chosen_operations() {
    let (d, vfs) = setup();
    vfs.inject(
        FaultRule::new(FaultOp::Sync, FaultKind::Eio)
            .on("wal")
            .after(1)
            .times(1),
    );
    let f = vfs.create(&d.path().join("wal")).unwrap();
    f.sync_data().unwrap();
    assert_eq!(f.sync_data().unwrap_err().raw_os_error(), Some(libc::EIO));
    f.sync_data().unwrap();
    vfs.inject(FaultRule::new(FaultOp::Write, FaultKind::NoSpace));
    assert_eq!(
        f.append(b"x").unwrap_err().raw_os_error(),
        Some(libc::ENOSPC)
    );
    vfs.clear_faults();
    f.append(b"x").unwrap();
    assert_eq!(vfs.faults_injected(), 2);
    let g = vfs.create(&d.path().join("other")).unwrap();
    g.sync_data().unwrap();
}

#[test]
fn torn_write_stores_half() {
    let (d, vfs) = setup();
    let p = d.path().join("w");
    let f = vfs.create(&p).unwrap();
    vfs.inject(FaultRule::new(FaultOp::Write, FaultKind::TornWrite).times(1));
    assert!(f.write_at(&[9u8; 100], 0).is_err());
    assert_eq!(std::fs::read(&p).unwrap(), vec![9u8; 50]);
}
