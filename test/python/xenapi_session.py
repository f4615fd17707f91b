#!/usr/bin/python3
"""Drives the emulator with Python's XenAPI (Debian's python3-os-xenapi), as a script would.

Usage: xenapi_session.py <url> <root password>

Prints one JSON object with what was observed; test/integration/python-xenapi.test.ts asserts on it.
Nothing is judged here: failures of single steps are recorded (as their ErrorDescription) rather
than raised, so that the test shows every difference at once.
"""
import json
import sys
import xmlrpc.client

from os_xenapi.client import XenAPI

URL, PASSWORD = sys.argv[1], sys.argv[2]
out = {}


def failure(fn, *args):
    """The ErrorDescription of a call that must fail, or {'unexpected_success': value}."""
    try:
        value = fn(*args)
    except XenAPI.Failure as e:
        return list(e.details)
    return {'unexpected_success': repr(value)}


def kind(v):
    """A value's Python type as xmlrpc.client produced it."""
    return type(v).__name__


def raw(method, *params):
    """A call outside XenAPI.Session (no automatic re-login): the bare Status/Value struct."""
    proxy = xmlrpc.client.ServerProxy(URL)
    return getattr(proxy, method)(*params)


# ---- login: XenAPI.py then reads the API version (pool.get_all, pool.get_master, host.get_API_version_*)
session = XenAPI.Session(URL)
session.login_with_password('root', PASSWORD, '1.0', 'xapi-emu-test')
x = session.xenapi
out['api_version'] = session.API_version
out['handle'] = session.handle

pools = x.pool.get_all_records()
pool_ref = list(pools)[0]
pool = pools[pool_ref]
master = pool['master']
out['pool'] = {
    'count': len(pools),
    'ref': pool_ref,
    'master': master,
    'other_config_kind': kind(pool['other_config']),
    'get_master': x.pool.get_master(pool_ref),
}
major = x.host.get_API_version_major(master)
out['host'] = {
    'API_version_major': major,
    'API_version_major_kind': kind(major),
    'API_version_minor': x.host.get_API_version_minor(master),
    'name_label': x.host.get_name_label(master),
    'address': x.host.get_address(master),
}

# ---- records and their wire types
vms = x.VM.get_all_records()
dom0_ref = [r for r, v in vms.items() if v['is_control_domain'] and v['resident_on'] == master][0]
dom0 = vms[dom0_ref]
templates = sorted((v['name_label'], r) for r, v in vms.items() if v['is_a_template'])
template_label, template_ref = templates[0]
out['vms'] = {
    'count': len(vms),
    'templates': len(templates),
    'dom0': dom0_ref,
    'dom0_power_state': dom0['power_state'],
    'dom0_fields': sorted(dom0),
    'memory_static_max': dom0['memory_static_max'],
    'kinds': {
        'memory_static_max': kind(dom0['memory_static_max']),
        'domid': kind(dom0['domid']),
        'is_a_template': kind(dom0['is_a_template']),
        'HVM_shadow_multiplier': kind(dom0['HVM_shadow_multiplier']),
        'snapshot_time': kind(dom0['snapshot_time']),
        'other_config': kind(dom0['other_config']),
        'VBDs': kind(dom0['VBDs']),
        'name_description': kind(dom0['name_description']),
    },
    'snapshot_time': str(dom0['snapshot_time']),
    'record_equals_get_record': x.VM.get_record(dom0_ref) == dom0,
    'by_uuid': x.VM.get_by_uuid(dom0['uuid']),
    'alias_VM_get_all': sorted(x.VM_get_all()) == sorted(vms),
}
metrics = x.host.get_metrics(master)
last_updated = x.host_metrics.get_last_updated(metrics)
out['host_metrics'] = {'last_updated_kind': kind(last_updated), 'last_updated': str(last_updated), 'live': x.host_metrics.get_live(metrics)}
out['get_by_name_label'] = {'label': template_label, 'ref': template_ref, 'refs': x.VM.get_by_name_label(template_label)}
out['get_by_name_label_none'] = x.VM.get_by_name_label('no VM has this name')

# ---- errors: XenAPI.Failure(details) with xapi's exact codes and params
bad_ref = 'OpaqueRef:00000000-0000-0000-0000-00000000dead'
out['errors'] = {
    'handle_invalid': failure(x.VM.get_record, bad_ref),
    'count_mismatch': failure(x.VM.start),
    'count_mismatch_extra': failure(x.VM.get_record, dom0_ref, 'extra'),
    'uuid_invalid': failure(x.VM.get_by_uuid, 'not-a-uuid'),
    'method_unknown': failure(x.VM.no_such_message, dom0_ref),
    'vm_is_template': failure(x.VM.start, template_ref, False, False),
    'async_fault': failure(x.Async.VM.get_record, dom0_ref),
}
x.pool.add_to_other_config(pool_ref, 'python-test', 'one')
out['errors']['map_duplicate_key'] = failure(x.pool.add_to_other_config, pool_ref, 'python-test', 'two')
out['other_config_value'] = x.pool.get_other_config(pool_ref).get('python-test')
x.pool.remove_from_other_config(pool_ref, 'python-test')
out['other_config_removed'] = 'python-test' not in x.pool.get_other_config(pool_ref)

bad_login = XenAPI.Session(URL)
out['errors']['auth_failed'] = failure(bad_login.login_with_password, 'root', 'wrong password', '1.0', 'xapi-emu-test')
out['errors']['auth_failed_user'] = failure(bad_login.login_with_password, 'nobody', PASSWORD)

# ---- events: event.from with a float timeout, struct result, lowercase classes, <i4> counts
everything = getattr(x.event, 'from')(['vm', 'pool'], '', 30.0)
token = everything['token']
classes = sorted({e['class'] for e in everything['events']})
x.pool.set_name_description(pool_ref, 'touched by python')
changed = getattr(x.event, 'from')(['pool'], token, 30.0)
idle = getattr(x.event, 'from')(['pool'], changed['token'], 0.05)
out['events'] = {
    'initial_count': len(everything['events']),
    'initial_ops': sorted({e['operation'] for e in everything['events']}),
    'initial_classes': classes,
    'token': token,
    'counts_kind': kind(everything['valid_ref_counts']['vm']),
    'count_vm': everything['valid_ref_counts']['vm'],
    'changed': [{k: e[k] for k in ('class', 'operation', 'ref')} for e in changed['events']],
    'changed_description': changed['events'][0]['snapshot']['name_description'] if changed['events'] else None,
    'changed_token_after': changed['token'] > token,
    'idle_events': idle['events'],
    'idle_token_same': idle['token'] == changed['token'],
    'alias': len(x.event_from(['pool'], '', 1.0)['events']),
}

# ---- SESSION_INVALID: XenAPI.Session logs in again with its last login method and retries
first = session.handle
raw('session.logout', first)
out['relogin'] = {
    'old_invalid': raw('VM.get_all', first)['ErrorDescription'],
    'pools_after': x.pool.get_all() == [pool_ref],
    'new_handle': session.handle != first and session.handle.startswith('OpaqueRef:'),
}

# ---- emergency-mode login on the host that receives the call, and its local_logout
local = XenAPI.Session(URL)
local.slave_local_login_with_password('root', PASSWORD)
lh = local.handle
out['local'] = {
    'handle': lh,
    'api_version': local.API_version,
    'is_local_superuser': local.xenapi.session.get_is_local_superuser(lh),
    'this_host': local.xenapi.session.get_this_host(lh),
    'vms': len(local.xenapi.VM.get_all()),
}
local.xenapi.session.logout()  # XenAPI.py turns this into session.local_logout for slave_local logins
out['local']['after_logout'] = raw('session.get_uuid', lh, lh)['ErrorDescription']
out['local']['handle_cleared'] = local.handle is None

# ---- logout
h = session.handle
session.xenapi.session.logout()
out['logout'] = {'handle': h, 'after': raw('pool.get_all', h)['ErrorDescription'], 'handle_cleared': session.handle is None}

json.dump(out, sys.stdout, indent=1, sort_keys=True)
