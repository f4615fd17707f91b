// The simulated guests: profiles, the guest agent's reports, DHCP, and the guest's own events.
export * from './profile.js';
export { BOOT_SECONDS, guestOsOf } from './os.js';
export { DHCP_SUBNET_KEY, subnetOf, formatCidr, offerIpv4, slaacIpv6 } from './dhcp.js';
export { agentReport, agentReported, agentState, syncGuest, type AgentState } from './agent.js';
export * from './events.js';
