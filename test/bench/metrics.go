package bench

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotauth/iotauth/test/harness"
)

// scrapeEvery is how often the benchmark scrapes a broker that serves metrics: far more often than a
// Prometheus server would (15 s by default), so that the scrapes' own cost shows in the broker's CPU.
const scrapeEvery = time.Second

// scraper fetches a broker's /metrics every scrapeEvery until stopped, as a monitoring system would.
type scraper struct {
	url          string
	stop         chan struct{}
	done         sync.WaitGroup
	ok, failures atomic.Int64
	lastErr      atomic.Value // string
}

// metricsBroker starts a plugin broker that serves metrics on a free loopback port (plugin_opt_
// metrics_listen) and scrapes it for as long as the run lasts. The port stays the broker's across
// restarts (the reconnect storm restarts it).
func (r *runner) metricsBroker(dsn string, opts ...[2]string) (*harness.Broker, error) {
	port, err := harness.FreePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	b, err := r.pluginBroker(dsn, append([][2]string{{"metrics_listen", addr}}, opts...)...)
	if err != nil {
		return nil, err
	}
	s := &scraper{url: "http://" + addr + "/metrics", stop: make(chan struct{})}
	if err := s.scrape(); err != nil {
		return nil, fmt.Errorf("metrics of the broker on %s: %w", b.Addr(), err)
	}
	s.done.Add(1)
	go s.loop()
	r.scrapers = append(r.scrapers, s)
	return b, nil
}

func (s *scraper) loop() {
	defer s.done.Done()
	t := time.NewTicker(scrapeEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		if err := s.scrape(); err != nil {
			s.failures.Add(1) // a broker being restarted by the reconnect storm, for one
			s.lastErr.Store(err.Error())
		}
	}
}

func (s *scraper) scrape() error {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(s.url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "iotauth_plugin_connects_allowed_total") {
		return fmt.Errorf("GET %s: %d, %d bytes without the plugin's series", s.url, resp.StatusCode, len(body))
	}
	s.ok.Add(1)
	return nil
}

// stopScrapers ends the scrapes (call it before stopping the brokers) and notes their count in the
// report under load.
func (r *runner) stopScrapers(load string) {
	var ok, failed int64
	last := ""
	for _, s := range r.scrapers {
		close(s.stop)
		s.done.Wait()
		ok += s.ok.Load()
		failed += s.failures.Load()
		if e, _ := s.lastErr.Load().(string); e != "" {
			last = e
		}
	}
	if len(r.scrapers) == 0 {
		return
	}
	note := fmt.Sprintf("%s, metrics on (plugin_opt_metrics_listen): the broker was scraped over HTTP every %v throughout "+
		"(%d scrapes answered, %d failed)", load, scrapeEvery, ok, failed)
	if last != "" {
		note += "; a scrape fails while the reconnect storm restarts the broker; last failure: " + last
	}
	r.rep.Notes = append(r.rep.Notes, note)
	r.scrapers = nil
}
