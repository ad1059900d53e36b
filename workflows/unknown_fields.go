package workflows

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/agnivade/levenshtein"
)

// Temporal's JSON converter, like encoding/json, drops members that match no
// field: `"expiry": {"tll": "1h"}` would make a grant that never expires. The
// request types therefore remember, while they are decoded, the paths of the
// members they dropped, and validation refuses each one. Decoding the same
// payload always finds the same paths, so a replay validates as the first run did.

// unknownField is a member of a request's JSON that matches no field.
type unknownField struct {
	// Path is the member's JSON path, "expiry.tll"; a key that is not a plain
	// name is quoted, `support["a b"]`.
	Path string
	// Suggestion is the path of the field it probably meant, or "".
	Suggestion string
}

// rule is the validation rule an unknown member breaks.
func (u unknownField) rule() string {
	if u.Suggestion == "" {
		return ruleUnknownField
	}
	return ruleUnknownField + " (did you mean " + u.Suggestion + "?)"
}

const ruleUnknownField = "unknown field"

// onboardRequestFields is OnboardRequest without its UnmarshalJSON, for the
// plain decoding.
type onboardRequestFields OnboardRequest

// UnmarshalJSON decodes r as encoding/json does and remembers the members that
// match no field, which Validate reports.
func (r *OnboardRequest) UnmarshalJSON(b []byte) error {
	plain := onboardRequestFields(*r)
	if err := json.Unmarshal(b, &plain); err != nil {
		return renameStruct(err, "OnboardRequest")
	}
	*r = OnboardRequest(plain)
	r.unknownFields = findUnknownFields(b, reflect.TypeFor[OnboardRequest]())
	return nil
}

// revokeRequestFields is RevokeRequest without its UnmarshalJSON.
type revokeRequestFields RevokeRequest

// UnmarshalJSON decodes r as encoding/json does and remembers the members that
// match no field, which Validate reports.
func (r *RevokeRequest) UnmarshalJSON(b []byte) error {
	plain := revokeRequestFields(*r)
	if err := json.Unmarshal(b, &plain); err != nil {
		return renameStruct(err, "RevokeRequest")
	}
	*r = RevokeRequest(plain)
	r.unknownFields = findUnknownFields(b, reflect.TypeFor[RevokeRequest]())
	return nil
}

// renameStruct names the request type, not the decoding helper, in a type error.
func renameStruct(err error, name string) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Struct != "" {
		te.Struct = name
	}
	return err
}

// findUnknownFields walks the JSON of a value of type t and returns the members
// encoding/json would drop, in document order. Objects decoded into a struct are
// checked against its fields (matched like encoding/json: exactly, else ignoring
// case); lists are walked element by element; maps take any key, so free-form
// values (helm.values) are not walked. A strict decoder such as
// sigs.k8s.io/json's matches keys case-sensitively and joins keys with dots:
// it would refuse keys the converter accepts, miss members under a key written
// in another case, and give "a.b" the path of a nested member.
func findUnknownFields(raw []byte, t reflect.Type) []unknownField {
	var out []unknownField
	seen := map[string]bool{}
	var walk func(raw []byte, t reflect.Type, path string)
	walk = func(raw []byte, t reflect.Type, path string) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch t.Kind() {
		case reflect.Struct:
			for _, m := range objectMembers(raw) {
				p := memberPath(path, m.key)
				f, ok := fieldNamed(t, m.key)
				if ok {
					walk(m.value, f.Type, p)
					continue
				}
				if !seen[p] {
					seen[p] = true
					out = append(out, unknownField{Path: p, Suggestion: suggestField(t, path, m.key)})
				}
			}
		case reflect.Slice, reflect.Array:
			if !containsStructs(t.Elem()) {
				return
			}
			var elems []json.RawMessage
			if json.Unmarshal(raw, &elems) != nil {
				return
			}
			for i, e := range elems {
				walk(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
			}
		}
	}
	walk(raw, t, "")
	return out
}

// containsStructs reports whether values of t can hold JSON objects decoded
// into structs.
func containsStructs(t reflect.Type) bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		return true
	case reflect.Slice, reflect.Array:
		return containsStructs(t.Elem())
	}
	return false
}

type jsonMember struct {
	key   string
	value json.RawMessage
}

// objectMembers lists the members of a JSON object in document order,
// duplicates included (encoding/json decodes each of them); nothing for any
// other JSON value.
func objectMembers(raw []byte) []jsonMember {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil
	}
	var out []jsonMember
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return out
		}
		key, ok := tok.(string)
		if !ok {
			return out
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return out
		}
		out = append(out, jsonMember{key, v})
	}
	return out
}

// fieldNamed finds the field encoding/json decodes the member key into: the
// exact JSON name first, else one equal under Unicode case folding.
func fieldNamed(t reflect.Type, key string) (reflect.StructField, bool) {
	var folded *reflect.StructField
	for i := range t.NumField() {
		f := t.Field(i)
		name := jsonFieldName(f)
		switch {
		case name == "":
		case name == key:
			return f, true
		case folded == nil && strings.EqualFold(name, key):
			folded = &f
		}
	}
	if folded != nil {
		return *folded, true
	}
	return reflect.StructField{}, false
}

// jsonFieldName is the name encoding/json uses for f, or "" when it skips f.
func jsonFieldName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	tag := f.Tag.Get("json")
	if tag == "-" {
		return ""
	}
	if name, _, _ := strings.Cut(tag, ","); name != "" {
		return name
	}
	return f.Name
}

// memberPath appends key to path: ".key" for a plain name, `["key"]` for
// anything else, so the path reads unambiguously.
func memberPath(path, key string) string {
	if !isPlainKey(key) {
		return path + "[" + strconv.Quote(key) + "]"
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func isPlainKey(key string) bool {
	if key == "" {
		return false
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !isLowerAlnum(c) && (c < 'A' || c > 'Z') && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// maxSuggestionDistance is how many single-character edits a misspelt key may
// be away from the field it is taken for.
const maxSuggestionDistance = 2

// suggestField is the path of the field of t whose name is closest to key,
// within maxSuggestionDistance edits (ignoring case) and fewer edits than the
// key has characters; "" when none is. Ties go to the earlier field.
func suggestField(t reflect.Type, path, key string) string {
	best, bestDist := "", maxSuggestionDistance+1
	k := strings.ToLower(key)
	for i := range t.NumField() {
		name := jsonFieldName(t.Field(i))
		if name == "" {
			continue
		}
		if d := levenshtein.ComputeDistance(k, strings.ToLower(name)); d < bestDist && d < utf8.RuneCountInString(k) {
			best, bestDist = name, d
		}
	}
	if best == "" {
		return ""
	}
	return memberPath(path, best)
}
