package workflows

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gkewi/gkewi/activities"
)

// The fuzz targets below decode arbitrary bytes as the workflows' JSON inputs
// and check the promises validation makes to operators. `go test` runs their
// seed corpora under testdata/fuzz; `go test -run '^$' -fuzz FuzzX` explores.

// FuzzOnboardRequestValidate: validation never panics, is deterministic (also
// across decodings of the same input, as a replay decodes it again), refuses
// exactly the members encoding/json would drop (first, naming their paths),
// otherwise blames only fields of the JSON contract (quoting their actual
// values, in field order), and a request it accepts yields a usable workflow ID
// and a revoke request that is itself valid.
func FuzzOnboardRequestValidate(f *testing.F) {
	paths := contractPaths(reflect.TypeFor[OnboardRequest]())
	f.Fuzz(func(t *testing.T, input []byte) {
		var r OnboardRequest
		if json.Unmarshal(input, &r) != nil {
			return
		}
		asSent := problemsOf(t, r.Validate())
		assertSameProblems(t, asSent, problemsOf(t, r.Validate()), "Validate is not deterministic")
		checkProblems(t, paths, r, asSent)
		checkUnknownFields(t, input, reflect.TypeFor[onboardRequestFields](), asSent)
		var again OnboardRequest
		if err := json.Unmarshal(input, &again); err != nil {
			t.Fatalf("second decoding failed: %v", err)
		}
		assertSameProblems(t, asSent, problemsOf(t, again.Validate()), "decoding the same input again found other problems")

		d := r.WithDefaults()
		assertSameProblems(t, problemsOf(t, d.WithDefaults().Validate()), problemsOf(t, d.Validate()), "WithDefaults is not idempotent")
		defaulted := problemsOf(t, d.Validate())
		checkProblems(t, paths, d, defaulted)
		// Defaults are valid values; the only new problem they can bring is a
		// KSA derived from a release name that is itself invalid.
		for _, p := range defaulted {
			if !slices.Contains(asSent, p) && (p.Field != "ksa" || r.KSA != "") {
				t.Fatalf("a default introduced %v (as sent: %v)", p, asSent)
			}
		}
		for _, p := range asSent {
			if !slices.Contains(defaulted, p) {
				t.Fatalf("defaults hid %v", p)
			}
		}

		// ValidateAt adds at most the expiry-in-the-past check, at the end.
		now := time.Date(2026, 6, 1, 8, 0, 0, 0, time.UTC)
		at := problemsOf(t, r.ValidateAt(now))
		if len(at) < len(asSent) || len(at) > len(asSent)+1 {
			t.Fatalf("ValidateAt found %v, Validate %v", at, asSent)
		}
		assertSameProblems(t, asSent, at[:len(asSent)], "ValidateAt changed the clock-free problems")
		if len(at) > len(asSent) && at[len(at)-1].Field != "expiry.at" {
			t.Fatalf("ValidateAt added %v", at[len(at)-1])
		}

		if len(asSent) > 0 {
			return
		}
		if len(defaulted) > 0 {
			t.Fatalf("valid as sent but not after defaults: %v", defaulted)
		}
		checkValidOnboard(t, r)
	})
}

// checkValidOnboard checks what a valid request promises.
func checkValidOnboard(t *testing.T, r OnboardRequest) {
	t.Helper()
	id := OnboardWorkflowID(r)
	if !workflowIDPattern.MatchString(id) || !strings.HasPrefix(id, "gkewi-onboard/") {
		t.Fatalf("workflow ID %q has characters or parts an operator cannot type safely", id)
	}
	if id != OnboardWorkflowID(r.WithDefaults()) {
		t.Fatalf("the defaulted request names another grant: %q vs %q", id, OnboardWorkflowID(r.WithDefaults()))
	}

	// A valid request survives a JSON round trip (Temporal's payload encoding)
	// unchanged, still valid and naming the same grant.
	b1, err := json.Marshal(r)
	if err != nil {
		t.Fatalf("encoding a valid request: %v", err)
	}
	var again OnboardRequest
	if err := json.Unmarshal(b1, &again); err != nil {
		t.Fatalf("decoding a re-encoded request: %v\n%s", err, b1)
	}
	if err := again.Validate(); err != nil {
		t.Fatalf("re-encoded request is invalid: %v\n%s", err, b1)
	}
	b2, _ := json.Marshal(again)
	if string(b1) != string(b2) {
		t.Fatalf("JSON round trip changed the request:\n%s\n%s", b1, b2)
	}
	if OnboardWorkflowID(again) != id {
		t.Fatalf("round trip changed the workflow ID")
	}

	// The ready-made revoke request in the result must be accepted by Revoke.
	email := r.GSA.Email
	if r.GSA.AccountID != "" {
		email = r.GSA.AccountID + "@" + r.Project + saEmailDomain
	}
	rendered := r.WithDefaults()
	if rendered.KSA == "" {
		rendered.KSA = renderedKSA // what the rendering would have found
	}
	rev := (&onboarding{req: rendered, rendered: true, sa: activities.ServiceAccount{Email: email}}).revokeRequest()
	if err := rev.Validate(); err != nil {
		t.Fatalf("the revoke request of a valid onboarding is invalid: %v", err)
	}
	if want := "gkewi-revoke/" + strings.TrimPrefix(id, "gkewi-onboard/"); RevokeWorkflowID(rev) != want {
		t.Fatalf("revoke workflow ID %q, want %q", RevokeWorkflowID(rev), want)
	}
}

// workflowIDPattern: the prefix and five names, each safe in a shell and a URL.
var workflowIDPattern = regexp.MustCompile(`^gkewi-(onboard|revoke)(/[a-z0-9][a-z0-9.-]*){5}$`)

// FuzzRevokeRequestValidate is FuzzOnboardRequestValidate for Revoke.
func FuzzRevokeRequestValidate(f *testing.F) {
	paths := contractPaths(reflect.TypeFor[RevokeRequest]())
	f.Fuzz(func(t *testing.T, input []byte) {
		var r RevokeRequest
		if json.Unmarshal(input, &r) != nil {
			return
		}
		problems := problemsOf(t, r.Validate())
		assertSameProblems(t, problems, problemsOf(t, r.Validate()), "Validate is not deterministic")
		checkProblems(t, paths, r, problems)
		checkUnknownFields(t, input, reflect.TypeFor[revokeRequestFields](), problems)
		d := r.WithDefaults()
		defaulted := problemsOf(t, d.Validate())
		checkProblems(t, paths, d, defaulted)
		if len(problems) == 0 && len(defaulted) > 0 {
			t.Fatalf("valid as sent but not after defaults: %v", defaulted)
		}
		if len(problems) > 0 {
			return
		}
		if wait, err := d.TokenExpiryWait.Parse(); err != nil || wait < 0 || wait > maxTokenExpiryWait {
			t.Fatalf("accepted token expiry wait %q", d.TokenExpiryWait)
		}
		id := RevokeWorkflowID(r)
		if !workflowIDPattern.MatchString(id) || !strings.HasPrefix(id, "gkewi-revoke/") {
			t.Fatalf("workflow ID %q has characters or parts an operator cannot type safely", id)
		}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatalf("encoding a valid request: %v", err)
		}
		var again RevokeRequest
		if err := json.Unmarshal(b, &again); err != nil || again.Validate() != nil || RevokeWorkflowID(again) != id {
			t.Fatalf("JSON round trip broke a valid request: %v %v\n%s", err, again.Validate(), b)
		}
	})
}

// problemsOf returns the problems of a Validate result, failing on any other
// kind of error or an empty list.
func problemsOf(t *testing.T, err error) []FieldError {
	t.Helper()
	if err == nil {
		return nil
	}
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("validation returned %T, not *ValidationError: %v", err, err)
	}
	if len(ve.Problems) == 0 {
		t.Fatalf("ValidationError without problems: %q", err)
	}
	parts := make([]string, len(ve.Problems))
	for i, p := range ve.Problems {
		parts[i] = p.String()
	}
	if want := "invalid request: " + strings.Join(parts, "; "); err.Error() != want {
		t.Fatalf("error text %q, want %q", err.Error(), want)
	}
	return ve.Problems
}

func assertSameProblems(t *testing.T, want, got []FieldError, msg string) {
	t.Helper()
	if !slices.Equal(want, got) {
		t.Fatalf("%s:\n%v\n%v", msg, want, got)
	}
}

// checkProblems checks that unknown-field problems come first and name no
// contract field, and that each other problem names a contract field present in
// r (list indexes in range), quotes that field's value, states a rule, and that
// those problems come in the order of the fields in the contract.
func checkProblems(t *testing.T, paths []string, r any, problems []FieldError) {
	t.Helper()
	unknown := unknownProblems(problems)
	for _, p := range unknown {
		if p.Value != "" {
			t.Fatalf("unknown-field problem quotes a value: %+v", p)
		}
		if slices.Contains(paths, indexPattern.ReplaceAllString(p.Field, "[]")) {
			t.Fatalf("%q is a field of the JSON contract, yet reported unknown", p.Field)
		}
	}
	type position struct{ field, index int }
	last := position{-1, -1}
	for _, p := range problems[len(unknown):] {
		if isUnknownRule(p.Rule) {
			t.Fatalf("unknown-field problem %q after field problems: %v", p.Field, problems)
		}
		if p.Rule == "" {
			t.Fatalf("problem without a rule: %+v", p)
		}
		generic := indexPattern.ReplaceAllString(p.Field, "[]")
		at := slices.Index(paths, generic)
		if at < 0 {
			t.Fatalf("problem names %q, which is not a field of the JSON contract %v", p.Field, paths)
		}
		v, ok := valueAt(reflect.ValueOf(r), p.Field)
		if !ok {
			t.Fatalf("problem names %q, which is not in the request", p.Field)
		}
		if p.Value != "" && (v.Kind() != reflect.String || v.String() != p.Value) {
			t.Fatalf("problem %q quotes %q but the field holds %v", p.Field, p.Value, v)
		}
		if m := lengthRule.FindStringSubmatch(p.Rule); m != nil {
			limit, _ := strconv.Atoi(m[1])
			if v.Kind() != reflect.String || len(v.String()) <= limit {
				t.Fatalf("problem %q says %q but the value has %d bytes", p.Field, p.Rule, len(v.String()))
			}
		}
		if strings.Contains(p.Rule, "characters") && strings.HasPrefix(p.Rule, "must be at most") {
			t.Fatalf("rule %q counts characters; limits here are in bytes and must say so", p.Rule)
		}
		pos := position{at, -1}
		if m := indexPattern.FindAllStringSubmatch(p.Field, -1); len(m) > 0 {
			pos.index, _ = strconv.Atoi(m[len(m)-1][1])
		}
		if pos.field < last.field || (pos.field == last.field && pos.index < last.index) {
			t.Fatalf("problems out of field order: %q after %v", p.Field, problems)
		}
		last = pos
	}
}

// unknownProblems is the leading run of unknown-field problems.
func unknownProblems(problems []FieldError) []FieldError {
	n := 0
	for n < len(problems) && isUnknownRule(problems[n].Rule) {
		n++
	}
	return problems[:n]
}

func isUnknownRule(rule string) bool {
	return rule == ruleUnknownField || strings.HasPrefix(rule, ruleUnknownField+" (did you mean ")
}

// checkUnknownFields compares the unknown-field problems with encoding/json's
// own verdict: decoding input into plain (the request type without its
// UnmarshalJSON) with DisallowUnknownFields fails exactly when there are such
// problems, naming the key of the first one.
func checkUnknownFields(t *testing.T, input []byte, plain reflect.Type, problems []FieldError) {
	t.Helper()
	unknown := unknownProblems(problems)
	dec := json.NewDecoder(bytes.NewReader(input))
	dec.DisallowUnknownFields()
	err := dec.Decode(reflect.New(plain).Interface())
	if err == nil {
		if len(unknown) > 0 {
			t.Fatalf("encoding/json knows every member, yet %v", unknown)
		}
		return
	}
	key, ok := strings.CutPrefix(err.Error(), "json: unknown field ")
	if !ok {
		t.Fatalf("strict decoding failed otherwise than on an unknown field: %v", err)
	}
	if len(unknown) == 0 {
		t.Fatalf("encoding/json found unknown field %s, validation none", key)
	}
	if want, _ := strconv.Unquote(key); lastKey(t, unknown[0].Field) != want {
		t.Fatalf("encoding/json's first unknown field is %s, validation's %q", key, unknown[0].Field)
	}
	for _, p := range unknown {
		if !strings.HasPrefix(p.Rule, ruleUnknownField) {
			t.Fatalf("bad rule %q", p.Rule)
		}
		if hint, ok := strings.CutPrefix(p.Rule, ruleUnknownField+" (did you mean "); ok {
			hint = strings.TrimSuffix(hint, "?)")
			if hint == p.Field || lastKey(t, hint) == lastKey(t, p.Field) {
				t.Fatalf("%q suggests itself: %q", p.Field, p.Rule)
			}
		}
	}
}

// lastKey is the member key at the end of a path: "expiry.tll" -> "tll",
// `gsa["a b"]` -> "a b".
func lastKey(t *testing.T, path string) string {
	t.Helper()
	if strings.HasSuffix(path, `"]`) {
		i := strings.LastIndex(path, `["`)
		key, err := strconv.Unquote(path[i+1 : len(path)-1])
		if err != nil {
			t.Fatalf("path %q: %v", path, err)
		}
		return key
	}
	return path[strings.LastIndex(path, ".")+1:]
}

var (
	indexPattern = regexp.MustCompile(`\[(\d+)\]`)
	lengthRule   = regexp.MustCompile(`^must be at most (\d+) bytes`)
)

// contractPaths lists the JSON paths of t's fields in declaration order: "a.b"
// for nested objects, "a[]" for list elements. Free-form maps are not walked.
func contractPaths(t reflect.Type) []string {
	var out []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch t.Kind() {
		case reflect.Struct:
			for i := range t.NumField() {
				name := jsonName(t.Field(i))
				if name == "" {
					continue
				}
				path := name
				if prefix != "" {
					path = prefix + "." + name
				}
				out = append(out, path)
				walk(t.Field(i).Type, path)
			}
		case reflect.Slice:
			out = append(out, prefix+"[]")
			walk(t.Elem(), prefix+"[]")
		}
	}
	walk(t, "")
	return out
}

func jsonName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	switch name {
	case "-":
		return ""
	case "":
		return f.Name
	}
	return name
}

// valueAt follows a problem's field path ("support.approvers[1]") through v.
func valueAt(v reflect.Value, path string) (reflect.Value, bool) {
	for _, part := range strings.Split(path, ".") {
		name, rest, indexed := strings.Cut(part, "[")
		for v.Kind() == reflect.Pointer {
			if v.IsNil() {
				return reflect.Value{}, false
			}
			v = v.Elem()
		}
		if v.Kind() != reflect.Struct {
			return reflect.Value{}, false
		}
		found := false
		for i := range v.NumField() {
			if jsonName(v.Type().Field(i)) == name {
				v, found = v.Field(i), true
				break
			}
		}
		if !found {
			return reflect.Value{}, false
		}
		if indexed {
			i, err := strconv.Atoi(strings.TrimSuffix(rest, "]"))
			if err != nil || v.Kind() != reflect.Slice || i < 0 || i >= v.Len() {
				return reflect.Value{}, false
			}
			v = v.Index(i)
		}
	}
	return v, true
}
