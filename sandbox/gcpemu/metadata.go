package gcpemu

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"
)

// The GCE metadata server, at the root of the emulator: a process started with
// GCE_METADATA_HOST pointing here finds Application Default Credentials for the
// configured operator account, as it would on a GKE node.

const metadataPrefix = "/computeMetadata/v1/"

func (e *Emulator) serveMetadata(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Metadata-Flavor", "Google")
	w.Header().Set("Server", "Metadata Server for VM")
	if r.URL.Path == "/" {
		// The OnGCE probe reads only the response header.
		w.Header().Set("Content-Type", "application/text")
		_, _ = w.Write([]byte("computeMetadata/\n"))
		return
	}
	if r.Header.Get("X-Forwarded-For") != "" {
		http.Error(w, "Request rejected: X-Forwarded-For header present.", http.StatusForbidden)
		return
	}
	if r.Header.Get("Metadata-Flavor") != "Google" {
		http.Error(w, "Missing required header \"Metadata-Flavor\": \"Google\"", http.StatusForbidden)
		return
	}
	if r.Method != http.MethodGet {
		http.Error(w, "Method not allowed", http.StatusMethodNotAllowed)
		return
	}
	path := strings.TrimPrefix(r.URL.Path, metadataPrefix)
	if path == r.URL.Path {
		http.NotFound(w, r)
		return
	}
	id := "metadata." + strings.ReplaceAll(strings.Trim(path, "/"), "/", ".")
	if strings.HasSuffix(path, "/token") {
		id = "metadata.token"
	} else if strings.HasSuffix(path, "/identity") {
		id = "metadata.identity"
	}
	if ferr, _ := e.injectFault(r, id); ferr != nil {
		http.Error(w, ferr.Message, ferr.HTTP)
		return
	}

	e.mu.Lock()
	body, contentType, status := e.metadataValueLocked(path, r)
	e.log.add(e.now(), id, "", status)
	_ = e.saveLocked()
	e.mu.Unlock()

	if status != http.StatusOK {
		w.Header().Set("Content-Type", "text/html; charset=UTF-8")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
		return
	}
	w.Header().Set("Content-Type", contentType)
	_, _ = w.Write([]byte(body))
}

// operatorProjectLocked is the project the operator's account belongs to, or
// the first configured project.
func (e *Emulator) operatorProjectLocked() *projectState {
	if _, project, ok := splitServiceAccountEmail(e.cfg.Operator); ok {
		if p := e.st.Projects[project]; p != nil {
			return p
		}
	}
	if len(e.cfg.Projects) > 0 {
		return e.st.Projects[e.cfg.Projects[0].ID]
	}
	return nil
}

func (e *Emulator) metadataValueLocked(path string, r *http.Request) (string, string, int) {
	const text = "application/text"
	notFound := func() (string, string, int) {
		return "<!DOCTYPE html>\n<html lang=en><title>Error 404 (Not Found)!!1</title><p><b>404.</b> <ins>That’s an error.</ins>" +
			"<p>The requested URL <code>" + metadataPrefix + path + "</code> was not found on this server.</p>\n", "", http.StatusNotFound
	}
	p := e.operatorProjectLocked()
	location := "us-central1-a"
	clusterName := ""
	if p != nil {
		var keys []string
		for k := range p.Clusters {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		if len(keys) > 0 {
			location, clusterName = p.Clusters[keys[0]].Location, p.Clusters[keys[0]].Name
		}
	}
	// The metadata server answers for "default" and for the account's email.
	if rest, ok := strings.CutPrefix(path, "instance/service-accounts/"); ok && e.cfg.Operator != "" {
		account, leaf, _ := strings.Cut(rest, "/")
		switch {
		case account == "" && leaf == "":
			return "default/\n" + e.cfg.Operator + "/\n", text, http.StatusOK
		case account != "default" && account != e.cfg.Operator:
			return notFound()
		}
		switch leaf {
		case "":
			if r.URL.Query().Get("recursive") == "true" {
				return fmt.Sprintf(`{"aliases":["default"],"email":%q,"scopes":["https://www.googleapis.com/auth/cloud-platform"]}`,
					e.cfg.Operator), "application/json", http.StatusOK
			}
			return "aliases\nemail\nidentity\nscopes\ntoken\n", text, http.StatusOK
		case "email":
			return e.cfg.Operator, text, http.StatusOK
		case "aliases":
			return "default\n", text, http.StatusOK
		case "scopes":
			return "https://www.googleapis.com/auth/cloud-platform\n", text, http.StatusOK
		case "token":
			tok, expiresIn := e.operatorTokenLocked()
			return fmt.Sprintf(`{"access_token":%q,"expires_in":%d,"token_type":"Bearer"}`, tok, expiresIn),
				"application/json", http.StatusOK
		case "identity":
			return e.metadataIdentityLocked(r)
		}
		return notFound()
	}
	switch path {
	case "":
		return "instance/\nproject/\nuniverse/\n", text, http.StatusOK
	case "project/project-id":
		if p != nil {
			return p.ID, text, http.StatusOK
		}
	case "project/numeric-project-id":
		if p != nil {
			return fmt.Sprint(p.Number), text, http.StatusOK
		}
	case "universe/universe-domain":
		return "googleapis.com", text, http.StatusOK
	case "instance/zone":
		if p != nil {
			return fmt.Sprintf("projects/%d/zones/%s", p.Number, location), text, http.StatusOK
		}
	case "instance/id":
		return "4520031799277581759", text, http.StatusOK
	case "instance/name":
		return "gke-emulated-node", text, http.StatusOK
	case "instance/hostname":
		return "gke-emulated-node.c.internal", text, http.StatusOK
	case "instance/attributes/cluster-name":
		if clusterName != "" {
			return clusterName, text, http.StatusOK
		}
	case "instance/attributes/cluster-location":
		if clusterName != "" {
			return location, text, http.StatusOK
		}
	}
	return notFound()
}

// operatorTokenLocked returns the operator's cached token, minting a new one when
// less than five minutes of it remain, as the metadata server does.
func (e *Emulator) operatorTokenLocked() (string, int64) {
	now := e.now()
	var best string
	var bestExpiry time.Time
	principal := memberForEmail(e.cfg.Operator)
	for v, t := range e.st.Tokens {
		if t.Principal == principal && t.MetadataIssued && t.Expiry.After(bestExpiry) {
			best, bestExpiry = v, t.Expiry
		}
	}
	if best == "" || bestExpiry.Sub(now) < 5*time.Minute {
		t := &token{Principal: principal, Identities: []string{principal}, MetadataIssued: true}
		if sa := e.findServiceAccountLocked(e.cfg.Operator); sa != nil {
			t.SAUniqueID = sa.Resource.UniqueID
		}
		best = e.issueLocked(t, e.cfg.TokenLifetime)
		bestExpiry = t.Expiry
	}
	return best, int64(bestExpiry.Sub(now) / time.Second)
}
