package gcpemu

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// The fuzz targets below throw arbitrary requests at the emulator. Google
// answers bad input with 4xx and a well-formed error body, never a 5xx, so the
// emulator must too: a 500 here would teach the workflows to retry a request
// that can never succeed. `go test` runs the seed corpora under testdata/fuzz.

const (
	fuzzAppSA  = "app-backend@" + testProject + ".iam.gserviceaccount.com"
	fuzzKSA    = "serviceAccount:" + testPool + "[carto/carto-common-backend]"
	fuzzOther  = "proj-b"
	fuzzClient = "http://gcpemu.test"
)

var fuzzNow = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

// fuzzWorld is an emulator in a state the workflows meet: Workload Identity
// on in proj-a, an application GSA the KSA may impersonate, a second project
// with Workload Identity off and iamcredentials disabled, and tokens for the
// callers a fuzz input picks from.
type fuzzWorld struct {
	emu *Emulator
	// auth holds Authorization header values; "" sends none.
	auth []string
}

func newFuzzWorld(tb testing.TB, key *rsa.PrivateKey) *fuzzWorld {
	tb.Helper()
	jwks := jwksFor(&key.PublicKey, testKID)
	cfg := Config{
		Projects: []ProjectConfig{{
			ID: testProject, Number: testNumber,
			Clusters: []ClusterConfig{{
				Location: testLocation, Name: testCluster, NodePools: []string{"default-pool", "pool-b"},
				WorkloadPool: testPool,
				JWKS:         func() ([]byte, error) { return jwks, nil },
				Nodes:        &recordingLabeler{},
			}},
			EnabledServices: append([]string{"iamcredentials.googleapis.com"}, defaultServices...),
			Datasets:        []DatasetConfig{{ID: "analytics", Tables: []string{"events"}}},
		}, {
			ID: fuzzOther, Number: 271828182845,
			Clusters: []ClusterConfig{{Location: "europe-west1-b", Name: "c2", NodePools: []string{"default-pool"},
				JWKS: func() ([]byte, error) { return jwks, nil }, Nodes: &recordingLabeler{}}},
		}},
		Operator:      testOperator,
		OperatorRoles: testOperatorRoles,
		Now:           func() time.Time { return fuzzNow },
	}
	emu, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = emu.Close() })
	op := emu.MintAccessToken("serviceAccount:" + testOperator)
	w := &fuzzWorld{emu: emu}
	w.mustDo(tb, op, http.MethodPost, "/iam/v1/projects/"+testProject+"/serviceAccounts",
		`{"accountId":"app-backend","serviceAccount":{"displayName":"app"}}`)
	w.mustDo(tb, op, http.MethodPost, "/iam/v1/projects/-/serviceAccounts/"+fuzzAppSA+":setIamPolicy",
		`{"policy":{"bindings":[{"role":"roles/iam.workloadIdentityUser","members":["`+fuzzKSA+`"]},`+
			`{"role":"roles/iam.serviceAccountTokenCreator","members":["serviceAccount:`+fuzzAppSA+`"]}]}}`)
	w.auth = []string{
		"",
		"Bearer " + op,
		"Bearer ya29.never-issued",
		"Bearer " + emu.MintAccessToken(fuzzKSA),
		"Bearer " + emu.MintAccessToken("user:nobody@example.com"),
		"Bearer " + emu.MintAccessToken("serviceAccount:"+fuzzAppSA),
		"Basic dXNlcjpwYXNz",
		"Bearer ",
	}
	return w
}

func (w *fuzzWorld) do(auth, method, target, contentType string, header http.Header, body []byte) (*http.Request, *httptest.ResponseRecorder, error) {
	req, err := http.NewRequest(method, fuzzClient+target, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	w.emu.ServeHTTP(rec, req)
	return req, rec, nil
}

func (w *fuzzWorld) mustDo(tb testing.TB, token, method, target, body string) []byte {
	tb.Helper()
	_, rec, err := w.do("Bearer "+token, method, target, "application/json", nil, []byte(body))
	if err != nil || rec.Code != http.StatusOK {
		tb.Fatalf("%s %s: %v %d %s", method, target, err, rec.Code, rec.Body)
	}
	return rec.Body.Bytes()
}

// fuzzKey is the cluster's signing key. bits is 2048 like a real cluster's,
// or 1024 where a target signs every input and speed matters more.
func fuzzKey(tb testing.TB, bits int) *rsa.PrivateKey {
	key, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		tb.Fatal(err)
	}
	return key
}

// FuzzEmulatorRequests sends one arbitrary request (method, path and query,
// content type, caller, If-Match, body) to a fresh emulator, twice: the answers
// must agree (tokens and job ids aside), never be a 5xx, and every error must
// have the shape the real service gives.
func FuzzEmulatorRequests(f *testing.F) {
	key := fuzzKey(f, 2048)
	f.Fuzz(func(t *testing.T, method, target, contentType string, caller uint8, ifMatch string, body []byte) {
		if !strings.HasPrefix(target, "/") {
			target = "/" + target
		}
		u, err := url.Parse(fuzzClient + target)
		if err != nil {
			return
		}
		// Fault rules are the one way to ask for a 5xx.
		if strings.HasPrefix(u.Path, "/_emulator/faults") && method != http.MethodGet {
			return
		}
		header := http.Header{}
		if ifMatch != "" {
			header.Set("If-Match", ifMatch)
		}
		if caller >= 128 {
			header.Set("Metadata-Flavor", "Google")
		}
		var answers [2]string
		for i := range answers {
			w := newFuzzWorld(t, key)
			auth := w.auth[int(caller)%len(w.auth)]
			before := mustJSON(t, w.emu.stateSnapshot())
			req, rec, err := w.do(auth, method, target, contentType, header, body)
			if err != nil {
				return // not a request a client can send
			}
			checkResponse(t, req, rec)
			// A refused request and a read change nothing (the metadata
			// server's token endpoint mints, as the real one does).
			metadata := strings.HasPrefix(req.URL.Path, "/computeMetadata/")
			if (rec.Code >= 400 || req.Method == http.MethodGet) && !metadata {
				if after := mustJSON(t, w.emu.stateSnapshot()); after != before {
					t.Fatalf("%s %s answered %d but changed the state:\n%s\n%s\n%s", req.Method, req.URL, rec.Code, rec.Body, before, after)
				}
			}
			for _, a := range w.auth {
				if tok, ok := strings.CutPrefix(a, "Bearer "); ok && len(tok) > 20 && strings.Contains(rec.Body.String(), tok) {
					t.Fatalf("the answer repeats a caller's access token: %s", rec.Body)
				}
			}
			answers[i] = fmt.Sprintf("%d %s", rec.Code, volatile.ReplaceAllString(rec.Body.String(), "<volatile>"))
		}
		if answers[0] != answers[1] {
			t.Fatalf("the same request to the same world got different answers:\n%s\n%s", answers[0], answers[1])
		}
	})
}

// volatile matches the random parts of answers: token values and job ids.
var volatile = regexp.MustCompile(`ya29\.emu-[A-Za-z0-9_-]{36}|job_[A-Za-z0-9_-]{24}`)

// canonicalStatus lists the google.rpc.Code names Google pairs with each HTTP
// status in error bodies.
var canonicalStatus = map[int][]string{
	400: {"INVALID_ARGUMENT", "FAILED_PRECONDITION", "OUT_OF_RANGE"},
	401: {"UNAUTHENTICATED"},
	403: {"PERMISSION_DENIED"},
	404: {"NOT_FOUND"},
	409: {"ABORTED", "ALREADY_EXISTS"},
	412: {"FAILED_PRECONDITION"},
	429: {"RESOURCE_EXHAUSTED"},
}

var oauthErrors = []string{"invalid_request", "invalid_grant", "invalid_target", "unsupported_grant_type", "unauthorized_client", "invalid_scope"}

// checkResponse checks one answer against what the real front ends send.
func checkResponse(t *testing.T, req *http.Request, rec *httptest.ResponseRecorder) {
	t.Helper()
	path, code, ct := req.URL.Path, rec.Code, rec.Header().Get("Content-Type")
	where := fmt.Sprintf("%s %s (%s): %d %s", req.Method, req.URL, req.Header.Get("Content-Type"), code, rec.Body)
	if code >= 500 {
		t.Fatalf("server error for client input: %s", where)
	}
	metadata := path == "/" || strings.HasPrefix(path, "/computeMetadata/")
	switch {
	case code < 400:
		if !metadata && !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("success without a JSON body: %s", where)
		}
		return
	case strings.HasPrefix(ct, "text/html"):
		// Google's front end answers an unknown URL with its HTML page.
		if code != http.StatusNotFound {
			t.Fatalf("HTML error page with status %d: %s", code, where)
		}
		return
	case metadata:
		if !slices.Contains([]int{403, 404, 405}, code) {
			t.Fatalf("metadata server status %d: %s", code, where)
		}
		return
	case !strings.HasPrefix(ct, "application/json"):
		t.Fatalf("error with content type %q: %s", ct, where)
	}

	// The service answering: by its prefix, or by Google's own path at the root.
	svc, _ := routeRequest(req.Method, req.Host, path)
	if svc == STS {
		var body map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || len(body) != 2 {
			t.Fatalf("STS error is not {error, error_description}: %s", where)
		}
		e, _ := body["error"].(string)
		d, _ := body["error_description"].(string)
		if !slices.Contains(oauthErrors, e) || d == "" {
			t.Fatalf("STS error %q / %q: %s", e, d, where)
		}
		return
	}

	var body struct {
		Error *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Status  string `json:"status"`
			Errors  []struct {
				Message string `json:"message"`
				Domain  string `json:"domain"`
				Reason  string `json:"reason"`
			} `json:"errors"`
			Details []struct {
				Type     string            `json:"@type"`
				Reason   string            `json:"reason"`
				Domain   string            `json:"domain"`
				Metadata map[string]string `json:"metadata"`
			} `json:"details"`
		} `json:"error"`
	}
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil || body.Error == nil {
		t.Fatalf("error body is not Google's {\"error\": {...}} (%v): %s", err, where)
	}
	e := body.Error
	if e.Code != code || e.Message == "" {
		t.Fatalf("error body code %d / message %q: %s", e.Code, e.Message, where)
	}
	allowed := canonicalStatus[code]
	if strings.HasPrefix(path, "/_emulator/") && code == http.StatusMethodNotAllowed {
		allowed = []string{"INVALID_ARGUMENT"}
	}
	if !slices.Contains(allowed, e.Status) {
		t.Fatalf("status %q does not go with HTTP %d: %s", e.Status, code, where)
	}
	if svc == BigQuery {
		if len(e.Errors) != 1 || e.Errors[0].Message != e.Message || e.Errors[0].Reason == "" || e.Errors[0].Domain != "global" {
			t.Fatalf("BigQuery error without its errors[] entry: %s", where)
		}
	} else if len(e.Errors) != 0 {
		t.Fatalf("errors[] outside BigQuery: %s", where)
	}
	for _, d := range e.Details {
		if d.Type != "type.googleapis.com/google.rpc.ErrorInfo" || d.Reason == "" || d.Domain == "" {
			t.Fatalf("malformed error detail: %s", where)
		}
	}
	if code == http.StatusUnauthorized && !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer ") {
		t.Fatalf("401 without WWW-Authenticate: %s", where)
	}
}

// FuzzPolicyMember checks the member parser of setIamPolicy: a member is
// refused with 400 INVALID_ARGUMENT or accepted; an accepted one has a member
// type IAM knows, goes through a real setIamPolicy, reads back unchanged, and
// the read policy can be written back as is (the workflows' read-modify-write).
func FuzzPolicyMember(f *testing.F) {
	key := fuzzKey(f, 2048)
	shared := newFuzzWorld(f, key)
	f.Fuzz(func(t *testing.T, member string) {
		// Members arrive in JSON, where invalid UTF-8 has become U+FFFD.
		member = strings.ToValidUTF8(member, "\uFFFD")
		check := func() error {
			shared.emu.mu.Lock()
			defer shared.emu.mu.Unlock()
			return shared.emu.validateMemberLocked(member)
		}
		err := check()
		if again := check(); fmt.Sprint(err) != fmt.Sprint(again) {
			t.Fatalf("member %q: %v, then %v", member, err, again)
		}
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.HTTP != http.StatusBadRequest || ae.Status != "INVALID_ARGUMENT" || ae.Message == "" {
				t.Fatalf("member %q refused with %#v", member, err)
			}
			return
		}
		kind, _, _ := strings.Cut(member, ":")
		if !slices.Contains([]string{"allUsers", "allAuthenticatedUsers", "user", "group", "serviceAccount", "domain",
			"deleted", "projectOwner", "projectEditor", "projectViewer", "principal", "principalSet"}, kind) {
			t.Fatalf("accepted member %q of unknown type %q", member, kind)
		}

		w := newFuzzWorld(t, key)
		op := w.auth[1]
		resource := "/cloudresourcemanager/v3/projects/" + testProject
		readPolicy := func() map[string]any {
			_, rec, _ := w.do(op, http.MethodPost, resource+":getIamPolicy", "application/json", nil,
				[]byte(`{"options":{"requestedPolicyVersion":3}}`))
			var p map[string]any
			if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &p) != nil {
				t.Fatalf("getIamPolicy: %d %s", rec.Code, rec.Body)
			}
			return p
		}
		p := readPolicy()
		bindings, _ := p["bindings"].([]any)
		p["bindings"] = append(bindings, map[string]any{"role": "roles/viewer", "members": []string{member}})
		setBody, _ := json.Marshal(map[string]any{"policy": p})
		_, rec, _ := w.do(op, http.MethodPost, resource+":setIamPolicy", "application/json", nil, setBody)
		if rec.Code != http.StatusOK {
			t.Fatalf("member %q passes the parser but setIamPolicy refuses it: %d %s", member, rec.Code, rec.Body)
		}
		read := readPolicy()
		found := false
		for _, b := range read["bindings"].([]any) {
			b := b.(map[string]any)
			if b["role"] == "roles/viewer" {
				for _, m := range b["members"].([]any) {
					found = found || m == member
				}
			}
		}
		if !found {
			t.Fatalf("member %q was accepted but is not in the policy read back: %v", member, read)
		}
		again, _ := json.Marshal(map[string]any{"policy": read})
		if _, rec, _ := w.do(op, http.MethodPost, resource+":setIamPolicy", "application/json", nil, again); rec.Code != http.StatusOK {
			t.Fatalf("writing back the policy as read fails: %d %s", rec.Code, rec.Body)
		}
	})
}

// FuzzSetIamPolicy sends arbitrary setIamPolicy bodies to a project and to a
// service account. Whatever is accepted must come back normalized (bindings
// merged and sorted, members unique and sorted, version 3 exactly when there
// is a condition), read back the same, and be writable again unchanged.
func FuzzSetIamPolicy(f *testing.F) {
	key := fuzzKey(f, 2048)
	f.Fuzz(func(t *testing.T, onServiceAccount bool, body []byte) {
		w := newFuzzWorld(t, key)
		op := w.auth[1]
		resource := "/cloudresourcemanager/v3/projects/" + testProject
		if onServiceAccount {
			resource = "/iam/v1/projects/-/serviceAccounts/" + fuzzAppSA
		}
		req, rec, err := w.do(op, http.MethodPost, resource+":setIamPolicy", "application/json", nil, body)
		if err != nil {
			t.Fatal(err)
		}
		checkResponse(t, req, rec)
		if !slices.Contains([]int{200, 400, 409}, rec.Code) {
			t.Fatalf("setIamPolicy answered %d: %s", rec.Code, rec.Body)
		}
		if rec.Code != http.StatusOK {
			return
		}
		var written policy
		if err := json.Unmarshal(rec.Body.Bytes(), &written); err != nil {
			t.Fatalf("setIamPolicy answer: %v", err)
		}
		checkNormalized(t, &written)

		// A policy may lock the caller out, so read and write back directly:
		// getIamPolicy's view and setIamPolicy's checks, without the permission check.
		w.emu.mu.Lock()
		defer w.emu.mu.Unlock()
		h, permPrefix := w.emu.st.Projects[testProject].Policy, ""
		if onServiceAccount {
			h, permPrefix = w.emu.findServiceAccountLocked(fuzzAppSA).Policy, "iam.serviceAccounts."
		}
		read, err := readPolicy(h, 3)
		if err != nil {
			t.Fatal(err)
		}
		if a, b := mustJSON(t, written), mustJSON(t, read); a != b {
			t.Fatalf("getIamPolicy differs from what setIamPolicy returned:\n%s\n%s", a, b)
		}
		rewritten, err := w.emu.writePolicy(&call{r: req, now: fuzzNow}, h, policyWrite{Policy: read.clone()}, permPrefix, nil)
		if err != nil {
			t.Fatalf("writing back the policy as read fails: %v\n%s", err, mustJSON(t, read))
		}
		if a, b := mustJSON(t, read.Bindings), mustJSON(t, rewritten.Bindings); a != b {
			t.Fatalf("writing back the policy changed it:\n%s\n%s", a, b)
		}
		if rewritten.Etag == read.Etag {
			t.Fatalf("a write kept the etag %q", read.Etag)
		}
	})
}

func checkNormalized(t *testing.T, p *policy) {
	t.Helper()
	if p.Etag == "" {
		t.Fatalf("policy without etag")
	}
	if want := map[bool]int{true: 3, false: 1}[p.hasConditions()]; p.Version != want {
		t.Fatalf("policy version %d, want %d", p.Version, want)
	}
	seen := map[string]bool{}
	for i, b := range p.Bindings {
		if len(b.Members) == 0 || !sort.StringsAreSorted(b.Members) || slices.Contains(b.Members, "") {
			t.Fatalf("binding %s members not normalized: %q", b.Role, b.Members)
		}
		if len(slices.Compact(slices.Clone(b.Members))) != len(b.Members) {
			t.Fatalf("binding %s repeats a member: %q", b.Role, b.Members)
		}
		k := b.Role + "\x00" + condKey(b.Condition)
		if seen[k] {
			t.Fatalf("two bindings for %s with the same condition", b.Role)
		}
		seen[k] = true
		if i > 0 && p.Bindings[i-1].Role > b.Role {
			t.Fatalf("bindings not sorted by role")
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// FuzzSTSToken sends arbitrary token exchange bodies, form or JSON encoded.
// Without a token signed by the cluster nothing may succeed, and every refusal
// is a 4xx in the OAuth error shape.
func FuzzSTSToken(f *testing.F) {
	key := fuzzKey(f, 2048)
	shared := newFuzzWorld(f, key)
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		req, rec, err := shared.do("", http.MethodPost, "/sts/v1/token", contentType, nil, body)
		if err != nil {
			t.Fatal(err)
		}
		checkResponse(t, req, rec)
		if rec.Code < 400 {
			t.Fatalf("an exchange without a signed token succeeded: %s", rec.Body)
		}
	})
}

// FuzzSTSClaims signs arbitrary claims with the cluster's key and exchanges
// them: a token is issued only when issuer, audience and validity hold, and it
// stands for the Kubernetes service account the claims name.
func FuzzSTSClaims(f *testing.F) {
	key := fuzzKey(f, 1024)
	shared := newFuzzWorld(f, key)
	f.Fuzz(func(t *testing.T, claims []byte) {
		jwt := signRawJWT(t, key, testKID, claims)
		form := url.Values{
			"grant_type":           {grantTokenExchange},
			"audience":             {"identitynamespace:" + testPool + ":" + testIssuer},
			"scope":                {"https://www.googleapis.com/auth/cloud-platform"},
			"requested_token_type": {tokenTypeAccess},
			"subject_token":        {jwt},
			"subject_token_type":   {tokenTypeJWT},
		}
		shared.emu.ResetRequestLog()
		req, rec, err := shared.do("", http.MethodPost, "/sts/v1/token", "application/x-www-form-urlencoded", nil, []byte(form.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		checkResponse(t, req, rec)
		if rec.Code != http.StatusOK {
			var e map[string]string
			_ = json.Unmarshal(rec.Body.Bytes(), &e)
			if rec.Code != http.StatusBadRequest || e["error"] != "invalid_grant" {
				t.Fatalf("a signed token for the right audience refused with %d %s", rec.Code, rec.Body)
			}
			return
		}
		var c struct {
			Iss string          `json:"iss"`
			Sub string          `json:"sub"`
			Aud json.RawMessage `json:"aud"`
			Exp int64           `json:"exp"`
			Nbf int64           `json:"nbf"`
			K8s *struct {
				Namespace      string `json:"namespace"`
				ServiceAccount struct {
					Name string `json:"name"`
				} `json:"serviceaccount"`
			} `json:"kubernetes.io"`
		}
		if err := json.Unmarshal(claims, &c); err != nil {
			t.Fatalf("accepted claims that do not parse: %v", err)
		}
		if c.Iss != testIssuer || !bytes.Contains(c.Aud, []byte(`"`+testPool+`"`)) || c.Exp <= fuzzNow.Unix() || c.Nbf > fuzzNow.Unix() {
			t.Fatalf("accepted claims with a wrong issuer, audience or validity: %s", claims)
		}
		ns, name := "", ""
		if c.K8s != nil {
			ns, name = c.K8s.Namespace, c.K8s.ServiceAccount.Name
		}
		if ns == "" || name == "" {
			rest, _ := strings.CutPrefix(c.Sub, "system:serviceaccount:")
			ns, name, _ = strings.Cut(rest, ":")
		}
		recent := shared.emu.RecentRequests()
		if want := "serviceAccount:" + testPool + "[" + ns + "/" + name + "]"; len(recent) != 1 || recent[0].Principal != want {
			t.Fatalf("issued a token for %v, want %s", recent, want)
		}
	})
}

// signRawJWT signs payload bytes as they are, so malformed claims get signed too.
func signRawJWT(t *testing.T, key *rsa.PrivateKey, kid string, payload []byte) string {
	t.Helper()
	header := mustJSON(t, map[string]string{"alg": "RS256", "kid": kid, "typ": "JWT"})
	signing := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString(payload)
	digest := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(nil, key, crypto.SHA256, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
}
