// The load generator of bench_latency (benchmarks/run_all.py): sends the events of a file,
// one JSON object per line, in order, at a steady rate, each stamped with its send time.
//
//     java -cp "$LIBS/*" benchmarks/PacedProducer.java BOOTSTRAP TOPIC FILE RATE
//
// $LIBS: the jars deploy/local-kafka.sh fetched (`deploy/local-kafka.sh fetch` prints it).
// Why Java: the generator shares the 2-core machine with the service and the broker.
// Standalone at 15,400 events/s for 30 s this used 9.2 s of CPU (compiling its source
// included) against 11.8 s for a kafka-python generator, and it keeps its rate when the
// CPU is short, where the Python one could fall behind and lighten the load.
//
// Events are sent in bursts every 5 ms; the events of a burst share its stamp, which
// replaces the first "SEND-TIME" placeholder (quotes included) in each line with the wall
// clock in epoch seconds.

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class PacedProducer {
    private static final String SLOT = "\"SEND-TIME\"";

    public static void main(String[] args) throws Exception {
        if (args.length != 4) {
            System.err.println("usage: PacedProducer BOOTSTRAP TOPIC FILE RATE");
            System.exit(2);
        }
        String topic = args[1];
        double rate = Double.parseDouble(args[3]);
        // Each line split once around its placeholder: a send only joins three arrays.
        List<byte[][]> parts = new ArrayList<>();
        for (String line : Files.readAllLines(Path.of(args[2]), StandardCharsets.UTF_8)) {
            int at = line.indexOf(SLOT);
            if (at < 0) {
                throw new IllegalArgumentException("a line without the SEND-TIME placeholder");
            }
            parts.add(new byte[][] {
                line.substring(0, at).getBytes(StandardCharsets.UTF_8),
                line.substring(at + SLOT.length()).getBytes(StandardCharsets.UTF_8),
            });
        }
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        int burst = Math.max(1, (int) (rate * 0.005));
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(props)) {
            long start = System.nanoTime();
            for (int s = 0; s < parts.size(); s += burst) {
                long delay = start + (long) (s / rate * 1e9) - System.nanoTime();
                if (delay > 0) {
                    Thread.sleep(delay / 1_000_000, (int) (delay % 1_000_000));
                }
                Instant now = Instant.now();
                byte[] stamp = String.format("%d.%06d", now.getEpochSecond(), now.getNano() / 1000)
                    .getBytes(StandardCharsets.UTF_8);
                for (byte[][] p : parts.subList(s, Math.min(s + burst, parts.size()))) {
                    byte[] value = new byte[p[0].length + stamp.length + p[1].length];
                    System.arraycopy(p[0], 0, value, 0, p[0].length);
                    System.arraycopy(stamp, 0, value, p[0].length, stamp.length);
                    System.arraycopy(p[1], 0, value, p[0].length + stamp.length, p[1].length);
                    producer.send(new ProducerRecord<>(topic, value));
                }
            }
            producer.flush();
        }
    }
}
