package api

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strings"
)

// The server side of the wire: how roostd's handlers answer and check a
// bearer token, for the agent's API and the Alertmanager webhook alike.

// WriteJSON answers code with v as indented JSON.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// WriteError answers code with err as an Error.
func WriteError(w http.ResponseWriter, code int, err error) {
	WriteJSON(w, code, Error{Error: err.Error()})
}

// Bearer reports whether the request carries token as its bearer token
// (compared in constant time); an empty token admits nobody.
func Bearer(r *http.Request, token string) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && token != "" && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
}
