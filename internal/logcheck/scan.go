package logcheck

import (
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// Kind is the kind of credential a Finding is.
type Kind string

// The kinds Scan finds.
const (
	// Authorization is an Authorization header's credential, after its
	// scheme (Bearer, Basic, SharedKey, SharedAccessSignature, …).
	Authorization Kind = "Authorization header value"
	// Bearer is a token after "Bearer ", anywhere.
	Bearer Kind = "bearer token"
	// JWT is a token of two or three base64url parts, the first a JSON
	// object (eyJ…): a JWT, or the emulator's payload.signature.
	JWT Kind = "JWT-shaped token"
	// OAuthToken is the value of access_token, refresh_token, id_token
	// or client_secret, as a JSON member or a parameter.
	OAuthToken Kind = "OAuth token member"
	// AccountKey is a storage connection string's AccountKey=….
	AccountKey Kind = "storage account key"
	// SASSignature is a SAS URL's sig=… parameter.
	SASSignature Kind = "SAS signature"
	// SharedAccessKey is a connection string's SharedAccessKey=….
	SharedAccessKey Kind = "shared access key"
	// EventGridSAS is an aeg-sas-key or aeg-sas-token header's value.
	EventGridSAS Kind = "Event Grid SAS key or token"
	// IdentityHeader is the managed identity secret: an X-IDENTITY-HEADER
	// header's value or IDENTITY_HEADER=….
	IdentityHeader Kind = "managed identity header value"
	// FunctionsKey is an x-functions-key header's value.
	FunctionsKey Kind = "function key"
	// PrivateKey is a PEM block of a private key.
	PrivateKey Kind = "private key PEM block"
	// KeyMaterial is a run of 200 or more base64url characters, such as
	// an RSA modulus or private exponent in a JWK.
	KeyMaterial Kind = "key material"
	// Registered is a secret given to Secret.
	Registered Kind = "secret registered by the test"
)

// minKeyMaterial is the shortest run of base64url characters taken for
// key material. The modulus of an RSA-2048 JWK is 342 characters; the
// product's ordinary values are far shorter or broken by "/" (Resource
// Manager IDs, URLs), and a Key Vault version is 32 hex characters.
const minKeyMaterial = 200

// value is what follows a header or member name: optional quotes (also
// JSON-escaped ones), an optional "[" (a Go-printed http.Header), then
// the value itself, up to a blank, a quote or a "]".
const value = `\\?["']?\s*[:=]\s*\[?\\?["']?\s*([^\s"'\\\]]{8,})`

// A detector finds one kind. The first group of re that matched is the
// secret, else the whole match is. One of keywords, lower case, must be
// in the lowered text for re to run, which spares most texts most
// expressions.
type detector struct {
	kind     Kind
	keywords []string
	re       *regexp.Regexp
	accept   func(secret string) bool // nil: every match
}

// detectors run in this order; where two find the same credential,
// the earlier one names it: by its context (a header, a member) rather
// than by its shape.
var detectors = []detector{{
	kind:     Authorization,
	keywords: []string{"authorization"},
	re: regexp.MustCompile(`(?i)\bauthorization\\?["']?\s*[:=]\s*\[?\\?["']?\s*` +
		`(?:bearer|basic|sharedaccesssignature|sharedaccesskey|sharedkey|pop)\s+([^\s"'\\\]]{8,})`),
}, {
	kind:     OAuthToken,
	keywords: []string{"_token", "client_secret"},
	re: regexp.MustCompile(`(?i)\b(?:access_token|refresh_token|id_token|client_secret)` +
		`\\?["']?\s*[:=]\s*\\?["']?([^\s"'\\,;&}]{8,})`),
}, {
	kind:     EventGridSAS,
	keywords: []string{"aeg-sas-"},
	re:       regexp.MustCompile(`(?i)\baeg-sas-(?:key|token)` + value),
}, {
	kind:     IdentityHeader,
	keywords: []string{"identity"},
	re: regexp.MustCompile(`(?i)\bx-identity-header` + value +
		`|(?i)\bidentity_header=\s*["']?([^\s"'\\]{8,})`),
}, {
	kind:     FunctionsKey,
	keywords: []string{"x-functions-key"},
	re:       regexp.MustCompile(`(?i)\bx-functions-key` + value),
}, {
	kind:     AccountKey,
	keywords: []string{"accountkey="},
	re:       regexp.MustCompile(`(?i)\baccountkey=([^;\s"'\\]{8,})`),
}, {
	kind:     SASSignature,
	keywords: []string{"sig="},
	re:       regexp.MustCompile(`(?im)(?:^|[?&;\s"'])sig=([^&;\s"'\\]{8,})`),
}, {
	kind:     SharedAccessKey,
	keywords: []string{"sharedaccesskey="},
	re:       regexp.MustCompile(`(?i)\bsharedaccesskey=([^;\s"'\\]{8,})`),
}, {
	kind:     Bearer,
	keywords: []string{"bearer"},
	re:       regexp.MustCompile(`(?i)\bbearer\s+([A-Za-z0-9._~+/-]{16,}=*)`),
	accept:   tokenLike,
}, {
	kind:     JWT,
	keywords: []string{"eyj"},
	re:       regexp.MustCompile(`\beyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,}(?:\.[A-Za-z0-9_-]+)?`),
}, {
	kind:     PrivateKey,
	keywords: []string{"private key"},
	re:       regexp.MustCompile(`-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----`),
}}

// tokenLike leaves out what follows "Bearer" in a challenge
// (Bearer authorization_uri="…"): a token has a digit or a dot.
func tokenLike(s string) bool { return strings.ContainsAny(s, "0123456789.") }

// placeholder reports whether s stands in for a redacted value.
func placeholder(s string) bool {
	s = strings.Trim(s, "<>*.[]")
	return s == "" || strings.EqualFold(s, "redacted")
}

// hit is a secret at text[start:end].
type hit struct {
	kind       Kind
	start, end int
}

// Scan returns the credentials in text, in the order they appear: the
// kinds above, and every secret given to Secret. Where kinds overlap (a
// JWT in an Authorization header) the credential is reported once, by
// its context rather than its shape.
func Scan(text string) []Finding {
	lower := strings.ToLower(text)
	var hits []hit
	for _, d := range detectors {
		if !slices.ContainsFunc(d.keywords, func(k string) bool { return strings.Contains(lower, k) }) {
			continue
		}
		for _, m := range d.re.FindAllStringSubmatchIndex(text, -1) {
			start, end := m[0], m[1]
			for g := 2; g+1 < len(m); g += 2 {
				if m[g] >= 0 {
					start, end = m[g], m[g+1]
					break
				}
			}
			s := text[start:end]
			if placeholder(s) || (d.accept != nil && !d.accept(s)) {
				continue
			}
			hits = append(hits, hit{d.kind, start, end})
		}
	}
	hits = append(hits, keyMaterial(text)...)
	hits = append(hits, literals(text)...)
	return findings(text, hits)
}

// keyMaterial finds runs of at least minKeyMaterial base64url characters.
func keyMaterial(text string) []hit {
	var hits []hit
	start := -1
	for i := 0; i <= len(text); i++ {
		if i < len(text) && base64url(text[i]) {
			if start < 0 {
				start = i
			}
			continue
		}
		if start >= 0 && i-start >= minKeyMaterial {
			hits = append(hits, hit{KeyMaterial, start, i})
		}
		start = -1
	}
	return hits
}

func base64url(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

// literals finds the registered secrets, as written and query-escaped.
func literals(text string) []hit {
	var hits []hit
	for _, s := range registered() {
		forms := []string{s}
		if q := url.QueryEscape(s); q != s {
			forms = append(forms, q)
		}
		for _, f := range forms {
			for off := 0; ; {
				i := strings.Index(text[off:], f)
				if i < 0 {
					break
				}
				hits = append(hits, hit{Registered, off + i, off + i + len(f)})
				off += i + len(f)
			}
		}
	}
	return hits
}

// findings orders hits by position, keeps one of each overlapping set
// (the first in detector order, the widest), and redacts them.
func findings(text string, hits []hit) []Finding {
	order := map[Kind]int{}
	for i, d := range detectors {
		order[d.kind] = i
	}
	order[KeyMaterial], order[Registered] = len(detectors), len(detectors)+1
	sort.SliceStable(hits, func(i, j int) bool {
		a, b := hits[i], hits[j]
		if a.start != b.start {
			return a.start < b.start
		}
		return order[a.kind] < order[b.kind]
	})

	var out []Finding
	end := -1
	for _, h := range hits {
		if h.start < end {
			continue
		}
		end = h.end
		out = append(out, Finding{
			Kind:    h.kind,
			Line:    1 + strings.Count(text[:h.start], "\n"),
			Excerpt: redact(text[h.start:h.end]),
		})
	}
	return out
}

// redactKeep is how many characters of a secret an excerpt shows: enough
// to tell which value it was, far too few to use it.
const redactKeep = 6

// redact returns the first characters of s, at most half of it, and "…".
func redact(s string) string {
	r := []rune(s)
	return string(r[:min(redactKeep, len(r)/2)]) + "…"
}
