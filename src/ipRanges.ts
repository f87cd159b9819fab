// Sets of CIDR ranges, as the configuration names them: which addresses outbound federation
// may not connect to (src/federation/safeFetch.ts), which client addresses have no
// per-address failed-login bucket (src/http/client/account.ts).
import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';

type Range = [ipaddr.IPv4 | ipaddr.IPv6, number];

/** An IP address as parsed: itself, and for an IPv4-mapped IPv6 address the IPv4 address it carries too. */
export type AddressForms = (ipaddr.IPv4 | ipaddr.IPv6)[];

/**
 * The forms an address is judged by: `::ffff:127.0.0.1` falls under `127.0.0.0/8` as well as
 * under IPv6 ranges. Brackets and a zone are allowed; anything that is not an IP literal
 * has no forms (and so is in no range).
 */
export function addressForms(address: string): AddressForms {
  const bare = address.startsWith('[') && address.endsWith(']') ? address.slice(1, -1) : address;
  if (isIP(bare.replace(/%.*$/, '')) === 0) return [];
  let parsed: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    parsed = ipaddr.parse(bare);
  } catch {
    return [];
  }
  if (parsed.kind() === 'ipv6' && (parsed as ipaddr.IPv6).isIPv4MappedAddress()) return [parsed, (parsed as ipaddr.IPv6).toIPv4Address()];
  return [parsed];
}

/**
 * A set of CIDR ranges. An IPv4-mapped IPv6 address is in it when it or the IPv4 address it
 * carries is; an address that does not parse is in none.
 */
export class IpRanges {
  private readonly ranges: Range[];

  constructor(cidrs: readonly string[]) {
    this.ranges = cidrs.map((c) => ipaddr.parseCIDR(c));
  }

  has(address: string): boolean {
    return this.holds(addressForms(address));
  }

  /** Whether any of an address's forms (addressForms) is in a range. */
  holds(forms: AddressForms): boolean {
    return forms.some((a) => this.ranges.some(([net, bits]) => net.kind() === a.kind() && a.match(net, bits)));
  }
}
