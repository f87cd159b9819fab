// The outbound address rules (Synapse's ip_range_blacklist / ip_range_whitelist): what
// the default deny list refuses, IPv6 and IPv4-mapped IPv6 judged like the IPv4 they
// carry, the allow list overriding the deny list, and an empty deny list refusing nothing.
import { describe, expect, it } from 'vitest';
import { DEFAULT_IP_DENYLIST } from '../../src/config.ts';
import { IpGuard } from '../../src/federation/safeFetch.ts';

describe('IpGuard with the default deny list', () => {
  const guard = new IpGuard(DEFAULT_IP_DENYLIST, []);

  it.each([
    ['loopback', '127.0.0.1'],
    ['loopback, anywhere in 127/8', '127.255.0.9'],
    ['this network', '0.0.0.0'],
    ['private 10/8', '10.1.2.3'],
    ['private 172.16/12', '172.31.255.254'],
    ['private 192.168/16', '192.168.0.1'],
    ['CGNAT', '100.64.0.1'],
    ['link-local (cloud metadata)', '169.254.169.254'],
    ['multicast', '224.0.0.251'],
    ['reserved 240/4', '240.0.0.1'],
    ['broadcast', '255.255.255.255'],
    ['documentation', '192.0.2.10'],
    ['benchmarking', '198.18.0.1'],
    ['IPv6 unspecified', '::'],
    ['IPv6 loopback', '::1'],
    ['IPv6 loopback, bracketed', '[::1]'],
    ['IPv6 ULA', 'fd12:3456::1'],
    ['IPv6 link-local', 'fe80::1'],
    ['IPv6 multicast', 'ff02::1'],
    ['IPv6 documentation', '2001:db8::1'],
    ['IPv4-mapped loopback', '::ffff:127.0.0.1'],
    ['IPv4-mapped private, hex form', '::ffff:a00:1'],
    ['IPv4-mapped public (the whole mapped range is denied)', '::ffff:8.8.8.8'],
    ['NAT64', '64:ff9b::a00:1'],
    ['6to4', '2002:7f00:1::1'],
  ])('denies %s (%s)', (_what, address) => {
    expect(guard.allows(address)).toBe(false);
  });

  it.each([
    ['public IPv4', '8.8.8.8'],
    ['public IPv4 next to a private range', '172.32.0.1'],
    ['public IPv4 next to CGNAT', '100.128.0.1'],
    ['public IPv6', '2606:4700:4700::1111'],
  ])('allows %s (%s)', (_what, address) => {
    expect(guard.allows(address)).toBe(true);
  });

  it('denies whatever is not an IP address', () => {
    for (const junk of ['', 'localhost', 'example.org', '127.1', '0x7f.0.0.1', '1.2.3.4.5', '::g', '[::1']) expect(guard.allows(junk)).toBe(false);
  });
});

describe('IpGuard allow list', () => {
  it('overrides the deny list for the ranges it names, and only those', () => {
    const guard = new IpGuard(DEFAULT_IP_DENYLIST, ['127.0.0.1/32', '10.5.0.0/16', 'fd00:1::/32']);
    expect(guard.allows('127.0.0.1')).toBe(true);
    expect(guard.allows('127.0.0.2')).toBe(false);
    expect(guard.allows('10.5.200.1')).toBe(true);
    expect(guard.allows('10.6.0.1')).toBe(false);
    expect(guard.allows('fd00:1:2::3')).toBe(true);
    expect(guard.allows('fd00:2::3')).toBe(false);
    expect(guard.allows('8.8.8.8')).toBe(true);
  });

  it('covers the IPv4-mapped form of an allowed IPv4 address', () => {
    const guard = new IpGuard(DEFAULT_IP_DENYLIST, ['127.0.0.1/32']);
    expect(guard.allows('::ffff:127.0.0.1')).toBe(true);
    expect(guard.allows('::ffff:127.0.0.2')).toBe(false);
  });

  it('an IPv4 allow range says nothing about an IPv6 address outside the mapped range', () => {
    const guard = new IpGuard(DEFAULT_IP_DENYLIST, ['0.0.0.0/0']);
    expect(guard.allows('10.0.0.1')).toBe(true);
    expect(guard.allows('::1')).toBe(false);
  });
});

describe('IpGuard deny list', () => {
  it('refuses nothing when empty', () => {
    const guard = new IpGuard([], []);
    for (const address of ['127.0.0.1', '10.0.0.1', '::1', 'fe80::1', '::ffff:127.0.0.1', '8.8.8.8']) expect(guard.allows(address)).toBe(true);
  });

  it('judges an IPv4-mapped IPv6 address by the IPv4 it carries under an IPv4-only deny list', () => {
    const guard = new IpGuard(['127.0.0.0/8'], []);
    expect(guard.allows('::ffff:127.0.0.1')).toBe(false);
    expect(guard.allows('::ffff:7f00:1')).toBe(false);
    expect(guard.allows('::ffff:8.8.8.8')).toBe(true);
    expect(guard.allows('::1')).toBe(true);
  });

  it('uses a custom list as given', () => {
    const guard = new IpGuard(['203.0.113.0/24', '2001:db8::/32'], []);
    expect(guard.allows('203.0.113.7')).toBe(false);
    expect(guard.allows('2001:db8::7')).toBe(false);
    expect(guard.allows('127.0.0.1')).toBe(true);
  });
});
