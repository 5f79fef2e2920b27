using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Gill.ML.Evaluation;
using Gill.ML.Evaluation.Paper;
using Gill.ML.World.Pretraining;
using Microsoft.ML;
using Spectre.Console;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Cli.Commands;

/// <summary>Reports progress synchronously through a delegate.</summary>
internal sealed class ActionProgress(Action<int> report) : IProgress<int>
{
    public void Report(int value) => report(value);
}

/// <summary><c>gill eval</c>: FID, LPIPS, Recall@k, CLIP similarity of embeddings and BLEU from files.</summary>
internal sealed class EvalCommandProvider : ICommandProvider
{
    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    public Command Build()
    {
        var eval = new Command("eval", "Evaluate generated images, retrieval and captions with the GILL paper's metrics");
        eval.Subcommands.Add(Fid());
        eval.Subcommands.Add(Lpips());
        eval.Subcommands.Add(Recall());
        eval.Subcommands.Add(ClipSim());
        eval.Subcommands.Add(ClipSimEmbeddings());
        eval.Subcommands.Add(Bleu());
        eval.Subcommands.Add(Paper());
        return eval;
    }

    private static Option<bool> JsonOption() => new("--json") { Description = "Print JSON instead of a table" };

    private static int Run(Func<int> body)
    {
        try
        {
            return body();
        }
        catch (Exception e) when (e is ArgumentException or InvalidDataException or FileNotFoundException or DirectoryNotFoundException
                                      or NotSupportedException or KeyNotFoundException or InvalidOperationException)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
    }

    private static string F(double v) => v.ToString("G8", CultureInfo.InvariantCulture);

    private static string Ci(ConfidenceInterval? ci) => ci is { } c ? Markup.Escape($"[{F(c.Lower)}, {F(c.Upper)}]") : "";

    // ------------------------------------------------------------------ fid

    private static Command Fid()
    {
        var a = new Argument<string>("DIR_A") { Description = "Generated images folder, or a saved .stats file" };
        var b = new Argument<string>("DIR_B") { Description = "Reference images folder, or a saved .stats file" };
        var weights = new Option<string?>("--weights") { Description = "FID InceptionV3 safetensors (pt_inception-2015-12-05, torchvision key names); needed unless both inputs are .stats files" };
        var saveStats = new Option<string?>("--save-stats") { Description = "Write the statistics of DIR_B (the reference set) to this file for reuse" };
        var batch = new Option<int>("--batch-size") { Description = "Images per forward pass", DefaultValueFactory = _ => 32 };
        var device = new Option<string>("--device") { Description = "cpu or cuda[:N]", DefaultValueFactory = _ => "cpu" };
        var json = JsonOption();
        var cmd = new Command("fid", "Fréchet Inception Distance between two image folders (pytorch-fid semantics)");
        cmd.Arguments.Add(a);
        cmd.Arguments.Add(b);
        foreach (var o in new Option[] { weights, saveStats, batch, device, json }) cmd.Options.Add(o);
        cmd.SetAction(r => Run(() =>
        {
            var pa = r.GetValue(a)!;
            var pb = r.GetValue(b)!;
            var catalog = new MLContext(0).Gill().Evaluation;
            FidFeatureExtractor? extractor = null;
            ProgressTask? current = null;
            var progress = new ActionProgress(done => { if (current is not null) current.Value = done; });
            try
            {
                FeatureStatistics Stats(string p)
                {
                    if (File.Exists(p)) return FeatureStatistics.Load(p);
                    if (extractor is null)
                    {
                        var w = r.GetValue(weights) ?? throw new ArgumentException($"'{p}' is a folder: --weights (the FID Inception safetensors) is required to extract features.");
                        extractor = catalog.LoadFidInception(w, new FidFeatureExtractorOptions
                        {
                            BatchSize = r.GetValue(batch),
                            Device = torch.device(r.GetValue(device)!),
                            Progress = progress,
                        });
                    }
                    var files = ImageFiles.List(p);
                    if (files.Count < 2) throw new ArgumentException($"FID needs at least 2 images; '{p}' has {files.Count}.");
                    FeatureStatistics s = default!;
                    var console = r.GetValue(json) ? AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) }) : AnsiConsole.Console;
                    console.Progress().Start(ctx =>
                    {
                        current = ctx.AddTask(Markup.Escape(Path.GetFileName(Path.TrimEndingDirectorySeparator(p))), maxValue: files.Count);
                        s = extractor.ExtractFromFiles(files).Statistics;
                        current.Value = files.Count;
                        current = null;
                    });
                    return s;
                }
                var sa = Stats(pa);
                var sb = Stats(pb);
                if (r.GetValue(saveStats) is { } save) sb.Save(save, $"statistics of {pb}");
                var m = catalog.Fid(sa, sb);
                if (r.GetValue(json))
                {
                    Console.WriteLine(JsonSerializer.Serialize(new { fid = m.Value, mean_term = m.MeanTerm, trace_term = m.TraceTerm, n_a = m.N, n_b = m.ReferenceCount, dims = m.Dimension, offset = m.OffsetApplied }, Json));
                }
                else
                {
                    var t = new Table().AddColumns("Metric", "Value");
                    t.AddRow("FID", F(m.Value));
                    t.AddRow("‖μa − μb‖²", F(m.MeanTerm));
                    t.AddRow("trace term", F(m.TraceTerm));
                    t.AddRow("N (A / B)", $"{m.N} / {m.ReferenceCount}");
                    AnsiConsole.Write(t);
                }
                return 0;
            }
            finally
            {
                extractor?.Dispose();
            }
        }));
        return cmd;
    }

    // ------------------------------------------------------------------ lpips

    private static Command Lpips()
    {
        var a = new Argument<string>("DIR_A") { Description = "Generated images folder" };
        var b = new Argument<string>("DIR_B") { Description = "Reference images folder (pairs are matched by file name)" };
        var net = new Option<string>("--net") { Description = "Trunk: alex (GILL's), vgg or squeeze", DefaultValueFactory = _ => "alex" };
        net.AcceptOnlyFromAmong("alex", "vgg", "squeeze");
        var trunk = new Option<string>("--trunk-weights") { Description = "Safetensors with the trunk's ImageNet weights (torchvision key names)", Required = true };
        var heads = new Option<string?>("--heads") { Description = "Safetensors with linK.model.1.weight (default: the embedded LPIPS v0.1 heads)" };
        var resize = new Option<int>("--resize") { Description = "Resize both images to this square size first (0 = keep)", DefaultValueFactory = _ => 256 };
        var device = new Option<string>("--device") { Description = "cpu or cuda[:N]", DefaultValueFactory = _ => "cpu" };
        var json = JsonOption();
        var cmd = new Command("lpips", "LPIPS v0.1 distance of image pairs matched by file name (GILL's lpips_2dirs.py)");
        cmd.Arguments.Add(a);
        cmd.Arguments.Add(b);
        foreach (var o in new Option[] { net, trunk, heads, resize, device, json }) cmd.Options.Add(o);
        cmd.SetAction(r => Run(() =>
        {
            var kind = r.GetValue(net) switch { "vgg" => LpipsNet.Vgg, "squeeze" => LpipsNet.Squeeze, _ => LpipsNet.Alex };
            int size = r.GetValue(resize);
            var catalog = new MLContext(0).Gill().Evaluation;
            using var model = catalog.LoadLpips(kind, r.GetValue(trunk)!, r.GetValue(heads),
                new LpipsOptions { ResizeTo = size > 0 ? size : null, Device = torch.device(r.GetValue(device)!) });
            var m = catalog.LpipsFromFolders(model, r.GetValue(a)!, r.GetValue(b)!);
            if (r.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(new
                {
                    net = r.GetValue(net),
                    mean = m.Value,
                    n = m.N,
                    ci95 = m.ConfidenceInterval is { } c ? new[] { c.Lower, c.Upper } : null,
                    pairs = m.Keys!.Select((k, i) => new { file = k, lpips = m.Scores[i] }),
                }, Json));
            }
            else
            {
                var t = new Table().AddColumns("File", "LPIPS");
                for (int i = 0; i < m.N; i++) t.AddRow(Markup.Escape(m.Keys![i]), F(m.Scores[i]));
                t.AddRow("[bold]mean[/]", $"[bold]{F(m.Value)}[/] {Ci(m.ConfidenceInterval)}");
                AnsiConsole.Write(t);
            }
            return 0;
        }));
        return cmd;
    }

    // ------------------------------------------------------------------ recall

    /// <summary>Loads FILE or FILE:TENSOR (a .npy file, or a safetensors file and optionally a tensor name).</summary>
    private static Tensor LoadArray(string spec)
    {
        if (File.Exists(spec)) return Npy.LoadMatrix(spec);
        int colon = spec.LastIndexOf(':');
        if (colon > 0 && File.Exists(spec[..colon])) return Npy.LoadMatrix(spec[..colon], spec[(colon + 1)..]);
        throw new FileNotFoundException($"Array file not found: '{spec}' (use FILE.npy, FILE.safetensors or FILE.safetensors:TENSOR).", spec);
    }

    private static float[][] Matrix(string spec, string role)
    {
        using var t = LoadArray(spec);
        if (t.dim() != 2) throw new ArgumentException($"The {role} array '{spec}' must be 2-d [N, D]; it is {Gill.ML.Serialization.SafeTensors.FormatShape(t.shape)}.");
        using var f = t.to(ScalarType.Float32).contiguous();
        long d = f.shape[1];
        var data = f.data<float>().ToArray();
        return Enumerable.Range(0, (int)f.shape[0]).Select(i => data.AsSpan((int)(i * d), (int)d).ToArray()).ToArray();
    }

    /// <summary>1-d [N] (one index per row) or 2-d [N, P] padded with negative values.</summary>
    private static int[][] IndexLists(string spec, string role)
    {
        using var t = LoadArray(spec);
        if (t.is_floating_point()) throw new ArgumentException($"The {role} array '{spec}' must hold integers; it is {t.dtype}.");
        using var l = t.to(ScalarType.Int64).contiguous();
        var data = l.data<long>().ToArray();
        if (l.dim() == 1) return data.Select(x => new[] { checked((int)x) }).ToArray();
        if (l.dim() != 2) throw new ArgumentException($"The {role} array '{spec}' must be [N] or [N, P] (padded with −1); it is {Gill.ML.Serialization.SafeTensors.FormatShape(l.shape)}.");
        long p = l.shape[1];
        return Enumerable.Range(0, (int)l.shape[0]).Select(i => data.Skip((int)(i * p)).Take((int)p).Where(x => x >= 0).Select(x => checked((int)x)).ToArray()).ToArray();
    }

    private static Command Recall()
    {
        var queries = new Option<string>("--queries") { Description = "Text (query) embeddings [N, D]: .npy, .safetensors or FILE.safetensors:TENSOR", Required = true };
        var gallery = new Option<string>("--gallery") { Description = "Image (gallery) embeddings [M, D]", Required = true };
        var gt = new Option<string>("--gt") { Description = "Positives per query: [N] indices or [N, P] padded with −1", Required = true };
        var exclude = new Option<string?>("--exclude") { Description = "Gallery items excluded per query: [N, E] padded with −1 (VIST: the story's own images)" };
        var ks = new Option<string>("--k") { Description = "Comma-separated k values", DefaultValueFactory = _ => "1,5,10" };
        var direction = new Option<string>("--direction") { Description = "t2i (queries are texts) or i2t (the image side queries)", DefaultValueFactory = _ => "t2i" };
        direction.AcceptOnlyFromAmong("t2i", "i2t");
        var similarity = new Option<string>("--similarity") { Description = "dot (embeddings already normalised) or cosine", DefaultValueFactory = _ => "dot" };
        similarity.AcceptOnlyFromAmong("dot", "cosine");
        var json = JsonOption();
        var cmd = new Command("recall", "Recall@k of embedding retrieval with several positives and excluded items");
        foreach (var o in new Option[] { queries, gallery, gt, exclude, ks, direction, similarity, json }) cmd.Options.Add(o);
        cmd.SetAction(r => Run(() =>
        {
            var kValues = r.GetValue(ks)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(s => int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var k) ? k : throw new ArgumentException($"--k: '{s}' is not an integer.")).ToArray();
            var m = new MLContext(0).Gill().Evaluation.RecallAtK(
                Matrix(r.GetValue(queries)!, "query"), Matrix(r.GetValue(gallery)!, "gallery"), IndexLists(r.GetValue(gt)!, "ground-truth"),
                r.GetValue(exclude) is { } e ? IndexLists(e, "exclusion") : null,
                r.GetValue(direction) == "i2t" ? RetrievalDirection.ImageToText : RetrievalDirection.TextToImage,
                new RecallAtKOptions { Ks = kValues, Similarity = r.GetValue(similarity) == "cosine" ? RetrievalSimilarity.Cosine : RetrievalSimilarity.Dot });
            if (r.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(new
                {
                    direction = r.GetValue(direction),
                    n = m.N,
                    gallery = m.GallerySize,
                    recall = m.Ks.Distinct().ToDictionary(k => k.ToString(CultureInfo.InvariantCulture), k => m.Recall[k]),
                    ci95 = m.Ks.Distinct().ToDictionary(k => k.ToString(CultureInfo.InvariantCulture), k => m.ConfidenceIntervals[k] is { } c ? new[] { c.Lower, c.Upper } : null),
                    mean_rank = m.MeanRank,
                }, Json));
            }
            else
            {
                var t = new Table().AddColumns("Metric", "Value", "95% CI");
                foreach (var k in m.Ks.Distinct()) t.AddRow($"R@{k}", F(m.Recall[k]), Ci(m.ConfidenceIntervals[k]));
                t.AddRow("mean rank", F(m.MeanRank), "");
                t.AddRow("queries / gallery", $"{m.N} / {m.GallerySize}", "");
                AnsiConsole.Write(t);
            }
            return 0;
        }));
        return cmd;
    }

    // ------------------------------------------------------------------ clip-sim

    private static Command ClipSim()
    {
        var a = new Argument<string>("DIR_A") { Description = "Generated images folder" };
        var b = new Argument<string>("DIR_B") { Description = "Reference images folder (paired by file name)" };
        var checkpoint = new Option<string>("--checkpoint") { Description = "CLIP folder with a visual projection (CLIPModel or CLIPVisionModelWithProjection)", Required = true };
        var json = JsonOption();
        var cmd = new Command("clip-sim", "CLIP similarity: cosine of projected CLIP image embeddings of image pairs matched by file name (GILL's compute_clip_similarity)");
        cmd.Arguments.Add(a);
        cmd.Arguments.Add(b);
        cmd.Options.Add(checkpoint);
        cmd.Options.Add(json);
        cmd.SetAction(r => Run(() =>
        {
            using var embedder = Gill.ML.Evaluation.ClipSimilarity.ClipImageEmbedder.Load(r.GetValue(checkpoint)!);
            var m = new MLContext(0).Gill().Evaluation.ClipSimilarityFromFolders(embedder, r.GetValue(a)!, r.GetValue(b)!);
            return PrintClipSimilarity(m, r.GetValue(json), "CLIP similarity (projected embeddings)");
        }));
        return cmd;
    }

    // ------------------------------------------------------------------ clip-sim-embeddings

    private static Command ClipSimEmbeddings()
    {
        var gen = new Option<string>("--generated") { Description = "Image embeddings of the generated images [N, D] (projected CLIP embeddings for GILL's numbers)", Required = true };
        var refs = new Option<string>("--reference") { Description = "Image embeddings of the reference images [N, D], same order", Required = true };
        var json = JsonOption();
        var cmd = new Command("clip-sim-embeddings", "CLIP similarity (mean cosine) of precomputed image embeddings, paired by row");
        foreach (var o in new Option[] { gen, refs, json }) cmd.Options.Add(o);
        cmd.SetAction(r => Run(() =>
        {
            var m = new MLContext(0).Gill().Evaluation.ClipSimilarity(Matrix(r.GetValue(gen)!, "generated embedding"), Matrix(r.GetValue(refs)!, "reference embedding"));
            return PrintClipSimilarity(m, r.GetValue(json), "CLIP similarity");
        }));
        return cmd;
    }

    private static int PrintClipSimilarity(ClipSimilarityMetrics m, bool json, string label)
    {
        if (json)
            Console.WriteLine(JsonSerializer.Serialize(new { clip_similarity = m.Value, n = m.N, std = m.StandardDeviation, ci95 = m.ConfidenceInterval is { } c ? new[] { c.Lower, c.Upper } : null, scores = m.Scores }, Json));
        else
        {
            var t = new Table().AddColumns("Metric", "Value", "95% CI");
            t.AddRow(Markup.Escape(label), F(m.Value), Ci(m.ConfidenceInterval));
            t.AddRow("N", m.N.ToString(CultureInfo.InvariantCulture), "");
            AnsiConsole.Write(t);
        }
        return 0;
    }

    // ------------------------------------------------------------------ bleu

    private static Command Bleu()
    {
        var hyp = new Option<string>("--hyp") { Description = "Hypotheses, one per line", Required = true };
        var refs = new Option<string[]>("--ref") { Description = "Reference file(s), one segment per line; repeat for several references", Required = true, AllowMultipleArgumentsPerToken = true };
        var json = JsonOption();
        var cmd = new Command("bleu", "Corpus BLEU-4 with sacrebleu's defaults (13a tokenisation, exp smoothing)");
        foreach (var o in new Option[] { hyp, refs, json }) cmd.Options.Add(o);
        cmd.SetAction(r => Run(() =>
        {
            var h = File.ReadAllLines(r.GetValue(hyp)!);
            var rs = r.GetValue(refs)!.Select(File.ReadAllLines).ToArray();
            foreach (var (lines, i) in rs.Select((x, i) => (x, i)))
                if (lines.Length != h.Length) throw new ArgumentException($"Reference file {i + 1} has {lines.Length} lines but the hypothesis file has {h.Length}.");
            var m = new MLContext(0).Gill().Evaluation.Bleu(h, h.Select((_, j) => (IReadOnlyList<string>)rs.Select(x => x[j]).ToArray()).ToArray());
            if (r.GetValue(json))
                Console.WriteLine(JsonSerializer.Serialize(new { bleu = m.Score, precisions = m.Precisions, bp = m.BrevityPenalty, sys_len = m.HypothesisLength, ref_len = m.ReferenceLength }, Json));
            else AnsiConsole.WriteLine(m.ToString());
            return 0;
        }));
        return cmd;
    }

    // ------------------------------------------------------------------ paper

    private static Command Paper()
    {
        var cache = new Option<string?>("--cache") { Description = "Pretrained world cache folder (read only) [default: the folder 'gill world pretrain' writes, quick or full]" };
        var output = new Option<string>("--out") { Description = "Output folder (tables as .md/.json/.png, index.md, results.json)", DefaultValueFactory = _ => "gill-paper" };
        var quick = new Option<bool>("--quick") { Description = "2 seeds, fewer steps, smaller evaluation sets (meant for the quick backbones)" };
        var seeds = new Option<int?>("--seeds") { Description = "Number of seeds (default 5, quick 2)" };
        var steps = new Option<int?>("--steps") { Description = "GILL training steps per model (default 100; quick 25)" };
        var only = new Option<string[]>("--only") { Description = "Experiments to run: " + string.Join(", ", PaperOptions.ExperimentNames) + " (comma or space separated; default all)", AllowMultipleArgumentsPerToken = true };
        var cmd = new Command("paper", "Reproduce the GILL paper's tables on the shapes world (stories, dialogue, retrieval, mapper, img-tokens, decision, frozen-lm, retrieved-context)");
        foreach (var o in new Option[] { cache, output, quick, seeds, steps, only }) cmd.Options.Add(o);
        cmd.SetAction((r, ct) => Task.FromResult(RunPaper(r.GetValue(cache), r.GetValue(output) ?? "gill-paper", r.GetValue(quick), r.GetValue(seeds), r.GetValue(steps), r.GetValue(only), ct)));
        return cmd;
    }

    private static int RunPaper(string? cache, string output, bool quick, int? seeds, int? steps, string[]? only, CancellationToken ct)
    {
        var options = new PaperOptions
        {
            CacheDirectory = cache ?? (quick ? WorldPretrainOptions.Quick(0) : new WorldPretrainOptions()).DefaultCacheDirectory(),
            OutputDirectory = output,
            Quick = quick,
            Seeds = seeds,
            Steps = steps,
            Only = only?.SelectMany(o => o.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).ToList(),
        };
        try
        {
            options.Validate();
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 2;
        }
        PaperResult? result = null;
        try
        {
            AnsiConsole.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
                .Start(ctx =>
                {
                    var overall = ctx.AddTask("all experiments", maxValue: 1);
                    var phase = ctx.AddTask("starting", maxValue: 1);
                    var gate = new object();
                    result = PaperExperiments.Run(options, new PaperReporter(p =>
                    {
                        lock (gate)
                        {
                            overall.MaxValue = Math.Max(1, p.TotalWork);
                            overall.Value = Math.Min(p.Done, overall.MaxValue);
                            phase.Description = Markup.Escape(p.Phase + (p.Loss is double l && double.IsFinite(l) ? $" (loss {l:F3})" : ""));
                            phase.MaxValue = Math.Max(1, p.Total);
                            phase.Value = Math.Min(p.Step, phase.MaxValue);
                        }
                    }), ct);
                    overall.Value = overall.MaxValue;
                    phase.Value = phase.MaxValue;
                });
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine("Cancelled.");
            return 130;
        }
        catch (Exception e) when (e is IOException or InvalidDataException or ArgumentException or InvalidOperationException or UnauthorizedAccessException or NotSupportedException)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
        foreach (var t in result!.Tables)
        {
            var table = new Table { Title = new TableTitle(Markup.Escape(t.Title)) };
            table.AddColumn("");
            foreach (var c in t.Columns) table.AddColumn(Markup.Escape(c));
            foreach (var row in t.Rows)
                table.AddRow(new[] { Markup.Escape(row.Label) }.Concat(t.Columns.Select(c => row.Cells.TryGetValue(c, out var cell) ? Markup.Escape(cell.Format()) : "–")).ToArray());
            AnsiConsole.Write(table);
        }
        AnsiConsole.MarkupLineInterpolated($"Total time: {result.TotalSeconds:F0} s. Tables: [green]{result.IndexPath}[/], {result.ResultsPath}");
        return 0;
    }

    private sealed class PaperReporter(Action<PaperProgress> report) : IProgress<PaperProgress>
    {
        public void Report(PaperProgress value) => report(value);
    }
}
