package api

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// ParseTrustedProxies reads TRUSTED_PROXIES: a comma-separated list of CIDRs (10.0.0.0/8) and single
// addresses (192.0.2.7, ::1). Empty means no proxy is trusted.
func ParseTrustedProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if strings.Contains(f, "/") {
			p, err := netip.ParsePrefix(f)
			if err != nil {
				return nil, fmt.Errorf("TRUSTED_PROXIES entry %q is not a CIDR: write it like 10.0.0.0/8 or fd00::/8", f)
			}
			if p.Bits() == 0 {
				return nil, fmt.Errorf("TRUSTED_PROXIES entry %q trusts every address, so any client could write its own X-Forwarded-For: list your proxies' addresses or networks", f)
			}
			if p.Addr().Is4In6() {
				return nil, fmt.Errorf("TRUSTED_PROXIES entry %q is an IPv4-mapped IPv6 network, which never matches (peers are compared as IPv4): write it as IPv4", f)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("TRUSTED_PROXIES entry %q is not an IP address or CIDR: write it like 192.0.2.7 or 10.0.0.0/8", f)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// client is who sent a request, as far as the server can tell.
type client struct {
	addr  string // the client's IP address
	https bool   // the client's own connection used TLS (directly, or as a trusted proxy reports)
}

type clientKey struct{}

// withClient resolves the request's client once, for the throttle, the audit trail and the log. The
// connection's peer is the client unless it is a trusted proxy: then X-Forwarded-For is read from the
// right and the first address that is not a trusted proxy is the client (addresses further left were
// written by the client itself and prove nothing).
func (s *Server) withClient(r *http.Request) *http.Request {
	c := client{addr: peerAddr(r), https: r.TLS != nil}
	if peer, err := netip.ParseAddr(c.addr); err == nil && s.trusted(peer.Unmap()) {
		if a, ok := s.forwardedFor(r.Header.Values("X-Forwarded-For")); ok {
			c.addr = a
		}
		if strings.EqualFold(strings.TrimSpace(r.Header.Get("X-Forwarded-Proto")), "https") {
			c.https = true
		}
	}
	return r.WithContext(context.WithValue(r.Context(), clientKey{}, c))
}

// forwardedFor walks X-Forwarded-For right to left and returns the right-most address that is not a
// trusted proxy. A malformed entry ends the walk: the last trusted hop before it is the client as far
// as anyone trustworthy can say. No usable entry: false.
func (s *Server) forwardedFor(headers []string) (string, bool) {
	var hops []string
	for _, h := range headers {
		hops = append(hops, strings.Split(h, ",")...)
	}
	last := ""
	for i := len(hops) - 1; i >= 0; i-- {
		a, ok := parseHop(hops[i])
		if !ok {
			break
		}
		last = a.String()
		if !s.trusted(a) {
			return last, true
		}
	}
	return last, last != ""
}

// parseHop reads one X-Forwarded-For entry: an address, or an address with a port as some proxies
// write it (192.0.2.1:4711, [2001:db8::1]:4711).
func parseHop(h string) (netip.Addr, bool) {
	h = strings.TrimSpace(h)
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(h); err == nil {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}

func (s *Server) trusted(a netip.Addr) bool {
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func peerAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap().String()
	}
	return host
}

// clientAddr is the client's IP address: the connection's peer, or what a trusted proxy forwarded
// (TRUSTED_PROXIES).
func clientAddr(r *http.Request) string {
	if c, ok := r.Context().Value(clientKey{}).(client); ok {
		return c.addr
	}
	return peerAddr(r)
}

// clientHTTPS reports whether the client reached us over TLS (directly or through a trusted proxy).
func clientHTTPS(r *http.Request) bool {
	if c, ok := r.Context().Value(clientKey{}).(client); ok {
		return c.https
	}
	return r.TLS != nil
}

// ClientHTTPS reports whether the client of r reached this server over TLS, directly or through a
// trusted proxy's X-Forwarded-Proto (TRUSTED_PROXIES), as the API itself judges it for its cookies.
// The console uses it to mark its own cookies Secure.
func (s *Server) ClientHTTPS(r *http.Request) bool { return clientHTTPS(s.withClient(r)) }
