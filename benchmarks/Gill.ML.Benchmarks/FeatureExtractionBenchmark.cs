using Gill.ML.Stages.VisualFeatures;
using Microsoft.ML;
using Microsoft.ML.Data;
using SkiaSharp;

namespace Gill.ML.Benchmarks;

/// <summary>
/// Examples per second of the visual feature extraction stage with the ResNet-18 ONNX preset: batched Transform
/// (batch 32 and others) versus one row at a time (batch 1, and PredictionEngine).
/// Arguments: [images=64] [runs=3].
/// </summary>
internal sealed class FeatureExtractionBenchmark : IBenchmark
{
    public string Name => "feature-extraction";

    public string Description => "ResNet-18 ONNX visual features: batched Transform vs one row at a time (examples/s)";

    private sealed class Row
    {
        public string ImagePath { get; set; } = "";
    }

    private sealed class Out
    {
        [VectorType(512)] public float[] Feat { get; set; } = Array.Empty<float>();
    }

    public int Run(string[] args)
    {
        int n = args.Length > 0 ? int.Parse(args[0]) : 64;
        int runs = args.Length > 1 ? int.Parse(args[1]) : 3;
        var folder = Path.Combine(Path.GetTempPath(), "gill-bench-images-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        try
        {
            var rows = new List<Row>();
            for (int i = 0; i < n; i++)
            {
                using var bmp = new SKBitmap(256, 256);
                using (var canvas = new SKCanvas(bmp))
                {
                    canvas.Clear(new SKColor((byte)(i * 37), (byte)(i * 91), (byte)(i * 13)));
                    using var paint = new SKPaint { Color = new SKColor((byte)(255 - i * 7), 120, (byte)(i * 29)), IsAntialias = true };
                    canvas.DrawCircle(64 + i % 128, 128, 60, paint);
                }
                var path = Path.Combine(folder, $"img{i}.png");
                using (var image = SKImage.FromBitmap(bmp))
                using (var data = image.Encode(SKEncodedImageFormat.Png, 100))
                    File.WriteAllBytes(path, data.ToArray());
                rows.Add(new Row { ImagePath = path });
            }

            var ml = new MLContext(1);
            var input = ml.Data.LoadFromEnumerable(rows);
            var sw = System.Diagnostics.Stopwatch.StartNew();
            using var encoder = OnnxVisualEncoder.ResNet18();
            Console.WriteLine($"ResNet-18 encoder: {encoder.FeatureSize}-d, batch dimension rewritten: {encoder.BatchDimensionRewritten}, load {sw.Elapsed.TotalSeconds:F2} s");
            Console.WriteLine($"{n} PNG images 256x256 (decode + center-crop to 224 + ONNX), {runs} runs after 1 warm-up, {Environment.ProcessorCount} cores");

            foreach (int batch in new[] { 1, 8, 32 })
            {
                using var t = ml.Gill().ExtractVisualFeatures("Feat", "ImagePath", encoder, batch).Fit(input);
                var times = Measure.Time(() => Consume(t.Transform(input)), runs);
                Console.WriteLine($"  Transform, batch {batch,2}: {n / Measure.Median(times),7:F1} examples/s   ({Measure.Summary(times, 1000, "ms")} per {n})");
            }
            using (var t = ml.Gill().ExtractVisualFeatures("Feat", "ImagePath", encoder, 32).Fit(input))
            {
                using var engine = ml.Model.CreatePredictionEngine<Row, Out>(t);
                var times = Measure.Time(() => { foreach (var r in rows) engine.Predict(r); }, runs);
                Console.WriteLine($"  PredictionEngine (1 row/call): {n / Measure.Median(times),7:F1} examples/s   ({Measure.Summary(times, 1000, "ms")} per {n})");
            }
            Console.WriteLine($"  peak RSS {Measure.PeakRssBytes() / (1 << 20)} MiB");
            return 0;
        }
        finally
        {
            try { Directory.Delete(folder, true); } catch (IOException) { }
        }
    }

    private static void Consume(IDataView view)
    {
        using var cursor = view.GetRowCursor(view.Schema.Where(c => c.Name == "Feat"));
        var getter = cursor.GetGetter<VBuffer<float>>(view.Schema["Feat"]);
        VBuffer<float> v = default;
        while (cursor.MoveNext()) getter(ref v);
    }
}
