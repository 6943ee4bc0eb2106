package console

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"time"

	qrcode "github.com/skip2/go-qrcode"
)

// provKey is a provisioning key as GET /api/v1/provision/keys lists it (a display prefix only).
type provKey struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Prefix    string    `json:"prefix"`
	ExpiresAt time.Time `json:"expiresAt"`
	Expired   bool      `json:"expired"`
	CreatedAt time.Time `json:"createdAt"`
}

// provisioningPage: unused provisioning keys, the form to make one, delete buttons.
func (c *keysScreen) provisioningPage(w http.ResponseWriter, r *http.Request, s *session, v *view) error {
	if !v.Can["provisionList"] {
		return &problem{Status: http.StatusForbidden, Detail: "your role (" + v.Me.Role + ") may not manage provisioning keys"}
	}
	keys, p, err := listOf[provKey](c.api, r, s, "/api/v1/provision/keys", "prov-keys", "cursor", keysPageSize,
		func() (int64, error) { return c.db.CountProvisioningKeys(r.Context()) })
	if err != nil {
		return err
	}
	v.Title, v.Nav, v.Notice = "Provisioning", "provisioning", notice(r)
	v.Data = map[string]any{"Keys": keys, "Pager": p}
	c.ui.render(w, r, s, http.StatusOK, "provisioning", v)
	return nil
}

// provisioned is the page that shows a new provisioning key once: as text, as an install one-liner,
// and as a QR code rendered here into a data: URI (never a URL that would carry the key).
type provisioned struct {
	Key       string
	Name      string
	ExpiresAt time.Time
	AgentName string
	Command   string
	QR        template.URL
	QRText    string
}

// QRLevel and QRSize are how the console draws a QR code: medium error correction (15 %), 320 px.
const (
	QRLevel = qrcode.Medium
	QRSize  = 320
)

// QRCodePNG draws content as the console's QR code: a PNG, the same bytes for the same content.
func QRCodePNG(content string) ([]byte, error) { return qrcode.Encode(content, QRLevel, QRSize) }

// QRPayload is what the QR code of a provisioning key holds: JSON with the registration URL and the
// key, so a device's installer can scan it and POST {"key", "agentName"} to url.
type QRPayload struct {
	URL string `json:"url"`
	Key string `json:"key"`
}

// createProvisioningKey: POST /api/v1/provision/keys.
func (c *keysScreen) createProvisioningKey(w http.ResponseWriter, r *http.Request, s *session, v *view) error {
	body := map[string]any{"name": strings.TrimSpace(r.PostFormValue("name"))}
	if h := strings.TrimSpace(r.PostFormValue("expiresHours")); h != "" {
		n, err := strconv.ParseFloat(h, 64)
		if err != nil || n <= 0 {
			return &problem{Status: http.StatusBadRequest, Detail: "the lifetime is a number of hours, such as 24"}
		}
		body["expiresIn"] = int64(n * 3600)
	}
	res, err := c.api.call(r, s, http.MethodPost, "/api/v1/provision/keys", body, nil)
	if err != nil {
		return err
	}
	if !res.ok() {
		return apiErr(res)
	}
	var out struct {
		Key       string    `json:"key"`
		Name      string    `json:"name"`
		ExpiresAt time.Time `json:"expiresAt"`
	}
	if err := res.decode(&out); err != nil {
		return err
	}
	agentName := strings.TrimSpace(r.PostFormValue("agentName"))
	if agentName == "" {
		agentName = "my-agent"
	}
	endpoint := c.publicBase(r) + "/api/v1/provision/agent"
	payload, _ := json.Marshal(QRPayload{URL: endpoint, Key: out.Key})
	png, err := QRCodePNG(string(payload))
	if err != nil {
		return fmt.Errorf("render the provisioning QR code: %w", err)
	}
	req, _ := json.Marshal(map[string]string{"key": out.Key, "agentName": agentName})
	v.Title, v.Nav = "New provisioning key", "provisioning"
	v.Data = provisioned{
		Key: out.Key, Name: out.Name, ExpiresAt: out.ExpiresAt, AgentName: agentName,
		Command: "curl -sS -X POST " + endpoint + " -H 'Content-Type: application/json' -d '" + strings.ReplaceAll(string(req), "'", `'\''`) + "'",
		QR:      template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(png)),
		QRText:  string(payload),
	}
	c.ui.render(w, r, s, http.StatusCreated, "provisioned", v)
	return nil
}

// publicBase is the API's base URL as the operator's browser reaches it.
func (c *keysScreen) publicBase(r *http.Request) string {
	scheme := "http"
	if c.api.ClientHTTPS(r) {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}
