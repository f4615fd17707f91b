// pool.join / join_force (xapi_pool.ml join_common, pre_join_checks) and pool.initial_auth. The
// joining instance logs in to the master with XAPI, checks as xapi does, takes the pool secret,
// then hands its host over (server/pool/handover.ts): the master adopts its objects and local SR
// contents, and from then on this instance forwards its connections to the master, which runs
// the host (server/pool/door.ts).
// master_address is "addr" (the master listens on our own port) or "addr:port".
import { registerProvider, type Call } from '../dispatch/registry.js';
import { XapiError } from '../dispatch/errors.js';
import type { Emulator } from '../emulator.js';
import { loginToPool, masterUrl, type RemotePool } from '../pool/remote.js';
import { poolSecret } from '../pool/secret.js';
import { poolRuntime } from '../pool/runtime.js';
import { adoptedOnMaster, collectBundle, commitOnMaster, pushSrFiles } from '../pool/handover.js';
import { clearJournal, writeJournal, writeMember } from '../pool/marker.js';

type Sv = Record<string, string>;

/** seconds between a joiner's answer and its restart as a member (xapi's Constants.fuse_time) */
const FUSE_SECONDS = 10;

function setProgress(emu: Emulator, task: string, p: number): void {
  const t = emu.db.get('task', task);
  if (t && t.status === 'pending' && Number(t.progress) < p) emu.db.update('task', task, { progress: Math.round(p * 100) / 100 });
}

const compatibilityName = (sv: Sv): string | undefined => sv.product_brand ?? sv.platform_name;

/** The checks of xapi's pre_join_checks that apply to an emulated host, in its order. */
async function preJoinChecks(emu: Emulator, remote: RemotePool, force: boolean): Promise<void> {
  const { db } = emu;
  const me = emu.master;
  const mine = db.get('host', me)!;
  const [myPool] = db.table('pool').keys();
  const rPool = ((await remote.call('pool.get_all')) as string[])[0];
  if (!rPool) throw new XapiError('INTERNAL_ERROR', ['Remote host does not belong to a pool.']);
  const rPoolRec = await remote.call('pool.get_record', rPool);
  const rMaster = String(rPoolRec.master);
  const master = await remote.call('host.get_record', rMaster);
  const mgmt = [...db.table('PIF')].find(([, r]) => r.rec.host === me && r.rec.management === true)?.[1].rec;
  // assert_management_interface_exists
  if (!mgmt) throw new XapiError('HOST_STILL_BOOTING', []);
  if (db.get('pool', myPool)!.ha_enabled === true) throw new XapiError('HA_IS_ENABLED', []);
  if (rPoolRec.ha_enabled === true) throw new XapiError('HA_IS_ENABLED', []);
  // assert_not_joining_myself
  if (master.uuid === mine.uuid) {
    throw new XapiError('OPERATION_NOT_ALLOWED', [db.count('host') > 1 ? 'Host is already part of a pool' : 'Host cannot become slave of itself']);
  }
  if (db.count('host') > 1) throw new XapiError('JOINING_HOST_CANNOT_BE_MASTER_OF_OTHER_HOSTS', []);
  const vms = [...db.table('VM').values()].map((r) => r.rec).filter((v) => v.is_control_domain !== true);
  if (vms.some((v) => v.power_state === 'Running')) throw new XapiError('JOINING_HOST_CANNOT_HAVE_RUNNING_VMS', []);
  if ([...db.table('VM').values()].some((r) => Object.keys((r.rec.current_operations as object) ?? {}).length > 0)) {
    throw new XapiError('JOINING_HOST_CANNOT_HAVE_VMS_WITH_CURRENT_OPERATIONS', []);
  }
  const mySv = mine.software_version as Sv;
  const rSv = master.software_version as Sv;
  // assert_hosts_compatible: platform version and brand
  if (mySv.platform_version !== rSv.platform_version || compatibilityName(mySv) !== compatibilityName(rSv)) {
    throw new XapiError('HOSTS_NOT_COMPATIBLE', []);
  }
  // assert_hosts_homogeneous (the one check join_force skips): software, then CPU vendor
  if (!force) {
    const fields = (sv: Sv) => [sv.xapi ?? '', compatibilityName(sv) ?? '', sv.git_id ?? '', 'xs:linux' in sv ? 'installed' : 'not present'].join('\u0000');
    if (fields(mySv) !== fields(rSv)) throw new XapiError('HOSTS_NOT_HOMOGENEOUS', ['Software version differs']);
    const myVendor = (mine.cpu_info as Sv).vendor;
    const poolVendor = (rPoolRec.cpu_info as Sv).vendor;
    if (myVendor !== poolVendor) throw new XapiError('HOSTS_NOT_HOMOGENEOUS', ['CPUs differ']);
  }
  if ([...db.table('SR').values()].some((r) => r.rec.shared === true && r.rec.is_tools_sr !== true)) {
    throw new XapiError('JOINING_HOST_CANNOT_CONTAIN_SHARED_SRS', []);
  }
  if (db.count('Bond') > 0) throw new XapiError('POOL_JOINING_HOST_HAS_BONDS', []);
  if (db.count('tunnel') > 0) throw new XapiError('POOL_JOINING_HOST_HAS_TUNNELS', []);
  if (db.count('network_sriov') > 0) throw new XapiError('POOL_JOINING_HOST_HAS_NETWORK_SRIOVS', []);
  for (const [, v] of db.table('VLAN')) {
    if (db.get('PIF', String(v.rec.untagged_PIF))?.management !== true) throw new XapiError('POOL_JOINING_HOST_HAS_NON_MANAGEMENT_VLANS', []);
  }
  const rMgmtPif = Object.values(await remote.call('PIF.get_all_records_where', `field "host" = "${rMaster}" and field "management" = "true"`))[0] as any;
  if (!rMgmtPif) throw new XapiError('HOST_STILL_BOOTING', []);
  const rVlan = Number(rMgmtPif.VLAN);
  if (Number(mgmt.VLAN) !== rVlan) throw new XapiError('POOL_JOINING_HOST_MANAGEMENT_VLAN_DOES_NOT_MATCH', [String(mgmt.VLAN), String(rVlan)]);
  if (mine.external_auth_type !== master.external_auth_type ||
      String(mine.external_auth_service_name).toLowerCase() !== String(master.external_auth_service_name).toLowerCase()) {
    throw new XapiError('POOL_JOINING_EXTERNAL_AUTH_MISMATCH', []);
  }
  // assert_restrictions_match: XCP-ng's v6d knows one edition
  const editions = Object.values(await remote.call('host.get_all_records')).map((h: any) => String(h.edition));
  const poolEdition = editions.find((e) => e !== mine.edition);
  if (poolEdition !== undefined) {
    throw new XapiError('LICENSE_HOST_POOL_MISMATCH', [`host edition = "${String(mine.edition)}"`, `pool edition = "${poolEdition}"`]);
  }
  if ((mySv.network_backend ?? 'bridge') !== (rSv.network_backend ?? 'bridge')) throw new XapiError('OPERATION_NOT_ALLOWED', ['Network backends differ']);
  if (mine.API_version_major !== master.API_version_major || mine.API_version_minor !== master.API_version_minor) {
    throw new XapiError('POOL_JOINING_HOST_MUST_HAVE_SAME_API_VERSION', [
      `${mine.API_version_major}.${mine.API_version_minor}`, `${master.API_version_major}.${master.API_version_minor}`,
    ]);
  }
  const mySchema = mySv.db_schema ?? '';
  const rSchema = rSv.db_schema ?? '';
  if (!mySchema || !rSchema || mySchema !== rSchema) throw new XapiError('POOL_JOINING_HOST_MUST_HAVE_SAME_DB_SCHEMA', [mySchema, rSchema]);
  const rAddrType = rMgmtPif.primary_address_type;
  if (String(mgmt.primary_address_type) !== String(rAddrType)) throw new XapiError('OPERATION_NOT_ALLOWED', ['Primary address type differs']);
  if (Boolean(db.get('pool', myPool)!.tls_verification_enabled) !== Boolean(rPoolRec.tls_verification_enabled)) {
    throw new XapiError('POOL_JOINING_HOST_TLS_VERIFICATION_MISMATCH', []);
  }
  // assert_sm_features_compatible: each of the pool's drivers, here once, with no fewer features
  const mySms = [...db.table('SM')];
  for (const [ref, sm] of Object.entries(await remote.call('SM.get_all_records')) as [string, any][]) {
    const same = mySms.filter(([, r]) => r.rec.type === sm.type);
    if (same.length !== 1) throw new XapiError('POOL_JOINING_SM_FEATURES_INCOMPATIBLE', [ref, '']);
    const [candRef, cand] = same[0];
    const have = cand.rec.features as Record<string, number>;
    for (const [f, v] of Object.entries(sm.features as Record<string, number>)) {
      if (!(f in have) || Number(have[f]) < Number(v)) throw new XapiError('POOL_JOINING_SM_FEATURES_INCOMPATIBLE', [ref, candRef]);
    }
  }
  // ours: each host of a pool has its own address (its listener)
  for (const h of Object.values(await remote.call('host.get_all_records')) as any[]) {
    if (h.address === mine.address) throw new XapiError('OPERATION_NOT_ALLOWED', [`a host of the pool has the address ${String(mine.address)} already`]);
  }
}

async function join(call: Call, address: string, user: string, password: string, force: boolean): Promise<void> {
  const { emu } = call;
  const [pool] = emu.db.table('pool').keys();
  // assert_pooling_licensed
  if ((emu.db.get('pool', pool)!.restrictions as Sv)?.restrict_pooling === 'true') throw new XapiError('LICENCE_RESTRICTION', []);
  const runtime = poolRuntime(emu);
  if (!runtime) throw new XapiError('NOT_IMPLEMENTED', ['pool.join of an emulator without listeners']);
  const url = masterUrl(String(address), runtime.port());
  const remote = await loginToPool(url, String(user), String(password), 'xapi');
  let secret: string;
  try {
    await preJoinChecks(emu, remote, force);
    secret = String(await remote.call('pool.initial_auth'));
  } finally {
    await remote.logout();
  }
  setProgress(emu, call.task, 0.1);
  const bundle = collectBundle(emu);
  const me = emu.db.get('host', emu.master)!;
  const hostUuid = String(me.uuid);
  const master = url.toString();
  // the journal: until the master has committed, this instance stays the standalone pool it was
  if (runtime.dataDir) writeJournal(runtime.dataDir, { master, host: hostUuid, secret });
  try {
    await pushSrFiles(emu, bundle, master, secret, (f) => setProgress(emu, call.task, 0.1 + 0.8 * f));
    await commitOnMaster(bundle, master, secret);
  } catch (e) {
    // the commit may have happened with its answer lost: the master tells
    const adopted = await adoptedOnMaster(hostUuid, master, secret).catch(() => undefined);
    if (adopted !== true) {
      // unknown (the master is unreachable): the journal stays, for the next start to resolve
      if (adopted === false && runtime.dataDir) clearJournal(runtime.dataDir);
      throw e;
    }
  }
  const member = { master, host: hostUuid, address: String(me.address), secret };
  if (runtime.dataDir) {
    writeMember(runtime.dataDir, member);
    clearJournal(runtime.dataDir);
  }
  setProgress(emu, call.task, 1);
  // as xapi's fuse (Xapi_fuse, Constants.fuse_time) after Host.update_master: the answer leaves, a
  // client may read the task's result, then this instance's listeners give way to the door
  const handOver = () => runtime.becomeMember(member).catch((e) => console.error(`xapi-emu: pool.join: ${(e as Error).message}`));
  setImmediate(() => void emu.clock.sleep(FUSE_SECONDS).then(handOver, handOver));
}

registerProvider('pool', {
  join: (call, address: string, user: string, password: string) => join(call, address, user, password, false),
  join_force: (call, address: string, user: string, password: string) => join(call, address, user, password, true),
  // Pool.initial_auth: the pool secret, for a host that joins
  initial_auth(call) {
    return poolSecret(call.emu);
  },
});
