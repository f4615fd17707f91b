// State snapshots of the pool (snapshots.ts) and their SR files (files.ts).
export {
  takeSnapshot, takeInitialSnapshot, restoreSnapshot, resetPool, listSnapshots, snapshotInfo, deleteSnapshot, restoreInterrupted, onRestore, materializeSnapshots,
  SNAPSHOT_NAME, type SnapshotInfo, type RestoreResult,
} from './snapshots.js';
