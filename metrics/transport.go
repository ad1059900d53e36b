package metrics

import (
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Transport counts and times the Google API calls made through next, by API,
// method and status code. The API is the one whose endpoint (from endpoints,
// API name to base URL) the request's URL starts with, else the first label of
// a *.googleapis.com host; the method comes from the REST path, in Google's
// discovery form: POST .../v1/projects/p/serviceAccounts/x:setIamPolicy is
// iam.projects.serviceAccounts.setIamPolicy.
func (m *Metrics) Transport(endpoints map[string]string, next http.RoundTripper) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	return &transport{m: m, endpoints: endpoints, next: next}
}

type transport struct {
	m         *Metrics
	endpoints map[string]string
	next      http.RoundTripper
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	api := t.api(req.URL)
	method := api + "." + MethodName(req.Method, req.URL.Path)
	begin := time.Now()
	resp, err := t.next.RoundTrip(req)
	t.m.apiDuration.WithLabelValues(api, method).Observe(time.Since(begin).Seconds())
	code := "transport"
	if err == nil {
		code = strconv.Itoa(resp.StatusCode)
	}
	t.m.apiRequests.WithLabelValues(api, method, code).Inc()
	if err != nil || resp.StatusCode >= 400 {
		t.m.apiErrors.WithLabelValues(api, method, code).Inc()
	}
	return resp, err
}

// api names the API a URL belongs to; the longest matching endpoint wins.
func (t *transport) api(u *url.URL) string {
	s := u.String()
	best, bestLen := "", 0
	for api, ep := range t.endpoints {
		ep = strings.TrimSuffix(ep, "/")
		if ep != "" && len(ep) > bestLen && (s == ep || strings.HasPrefix(s, ep+"/")) {
			best, bestLen = api, len(ep)
		}
	}
	if best != "" {
		return best
	}
	if host := u.Hostname(); strings.HasSuffix(host, ".googleapis.com") {
		return strings.SplitN(host, ".", 2)[0]
	}
	return "other"
}

// apiVersion matches the version segment of a Google REST path: v1, v2, v1beta1.
var apiVersion = regexp.MustCompile(`^v\d+((alpha|beta)\d*)?$`)

// MethodName names a REST call the way Google's discovery documents do, without
// the API: the collections of the path joined by dots, then the custom verb
// (":setIamPolicy") or the standard one the HTTP method and the path's shape
// imply (get, list, create, patch, update, delete). Resource ids never appear,
// so the label's values are few.
func MethodName(httpMethod, path string) string {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	// Past the version; upload paths and per-service prefixes come before it.
	for i, s := range segs {
		if apiVersion.MatchString(s) {
			segs = segs[i+1:]
			break
		}
	}
	verb := ""
	if n := len(segs); n > 0 {
		if base, custom, ok := strings.Cut(segs[n-1], ":"); ok {
			segs[n-1], verb = base, custom
		}
	}
	var collections []string
	for i := 0; i < len(segs); i += 2 {
		if segs[i] != "" {
			collections = append(collections, segs[i])
		}
	}
	endsWithID := len(segs)%2 == 0 && len(segs) > 0
	if verb == "" {
		switch httpMethod {
		case http.MethodGet:
			verb = "list"
			if endsWithID {
				verb = "get"
			}
		case http.MethodPost:
			verb = "create"
		case http.MethodPatch:
			verb = "patch"
		case http.MethodPut:
			verb = "update"
		case http.MethodDelete:
			verb = "delete"
		default:
			verb = strings.ToLower(httpMethod)
		}
	}
	if len(collections) == 0 {
		return verb
	}
	return strings.Join(collections, ".") + "." + verb
}
