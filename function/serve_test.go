package main

import (
	"context"
	"net"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cmkrotator/cmkrotator/internal/logcheck"
)

// pipeListener hands out in-memory connections, which a synctest bubble
// can wait on.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

func (l *pipeListener) dial(context.Context, string, string) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// TestServeOn_CancelsHandlersAfterTheGrace: on shutdown a handler that
// does not finish gets its context cancelled when the grace period
// ends, and serving returns.
func TestServeOn_CancelsHandlersAfterTheGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ln := newPipeListener()
		started := make(chan struct{})
		cancelled := make(chan time.Time, 1)
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			close(started)
			<-r.Context().Done()
			cancelled <- time.Now()
		})
		ctx, stop := context.WithCancel(t.Context())
		served := make(chan error, 1)
		go func() { served <- serveOn(ctx, ln, h, logcheck.Logger(t)) }()
		client := &http.Client{Transport: &http.Transport{DialContext: ln.dial}}
		go func() {
			if resp, err := client.Get("http://handler/"); err == nil {
				resp.Body.Close()
			}
		}()

		<-started
		start := time.Now()
		stop()
		err := <-served
		at := <-cancelled

		if got := at.Sub(start); got != shutdownGrace {
			t.Errorf("got the handler cancelled after %v, want %v", got, shutdownGrace)
		}
		if err == nil {
			t.Error("got no error, want one saying in-flight requests were cancelled")
		}
		client.CloseIdleConnections()
	})
}
