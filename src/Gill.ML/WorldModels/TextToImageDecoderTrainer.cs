using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.WorldModels;

/// <summary>Options for training the world's text-to-image decoder.</summary>
public sealed class DecoderTrainingOptions
{
    /// <summary>Optimizer steps.</summary>
    public int Steps { get; set; } = 1500;

    /// <summary>Examples per step.</summary>
    public int BatchSize { get; set; } = 32;

    /// <summary>Peak learning rate (AdamW), reached after <see cref="WarmupSteps"/>, then cosine decay to 5%.</summary>
    public double LearningRate { get; set; } = 2e-3;

    /// <summary>Linear warm-up steps.</summary>
    public int WarmupSteps { get; set; } = 50;

    /// <summary>Weight of pixels that differ from the background in the weighted MSE (background pixels weigh 1).
    /// Without it the decoder collapses to drawing the background.</summary>
    public float ObjectWeight { get; set; } = 10f;

    /// <summary>Seed for initialisation order and batch sampling.</summary>
    public int Seed { get; set; } = 1;

    /// <summary>Device to train on (the model and data are moved there).</summary>
    public Device Device { get; set; } = CPU;

    /// <summary>Reports (step, total steps, loss) every <see cref="ReportEvery"/> steps.</summary>
    public IProgress<(int Step, int TotalSteps, double Loss)>? Progress { get; set; }

    /// <summary>How often progress is reported.</summary>
    public int ReportEvery { get; set; } = 10;

    /// <summary>Stops at the next step boundary.</summary>
    public CancellationToken CancellationToken { get; set; }

    internal void Validate()
    {
        if (Steps <= 0) throw new ArgumentOutOfRangeException(nameof(Steps), Steps, "Steps must be positive.");
        if (BatchSize <= 0) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "BatchSize must be positive.");
        if (LearningRate <= 0) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "LearningRate must be positive.");
        if (WarmupSteps < 0) throw new ArgumentOutOfRangeException(nameof(WarmupSteps), WarmupSteps, "WarmupSteps must be non-negative.");
        if (ObjectWeight < 1) throw new ArgumentOutOfRangeException(nameof(ObjectWeight), ObjectWeight, "ObjectWeight must be at least 1.");
    }
}

/// <summary>Trains <see cref="TextToImageDecoder"/> on (conditioning, image) pairs with an object-weighted MSE.</summary>
internal static class TextToImageDecoderTrainer
{
    /// <summary>
    /// Trains in place. <paramref name="conditioning"/> is [N, L, m] (the frozen text encoder's hidden states of each
    /// caption), <paramref name="images"/> is [N, 3, S, S] in [0, 1]. Returns the loss of every step.
    /// </summary>
    public static List<double> Train(TextToImageDecoder model, Tensor conditioning, Tensor images, DecoderTrainingOptions options)
    {
        options.Validate();
        long n = conditioning.shape[0];
        if (images.shape[0] != n)
            throw new ArgumentException($"{n} conditioning rows but {images.shape[0]} images.", nameof(images));
        var s = model.Config.ImageSize;
        if (images.dim() != 4 || images.shape[1] != 3 || images.shape[2] != s || images.shape[3] != s)
            throw new ArgumentException($"Images must have shape [N, 3, {s}, {s}], got [{string.Join(", ", images.shape)}].", nameof(images));

        var device = options.Device;
        model.to(device);
        model.train();
        var parameters = model.parameters().ToList();
        using var optimizer = torch.optim.AdamW(parameters, options.LearningRate, weight_decay: 0.0);
        var gen = new torch.Generator((ulong)options.Seed);
        var losses = new List<double>(options.Steps);
        using var condDev = conditioning.to(device);
        using var imgDev = images.to(device);
        for (int step = 0; step < options.Steps; step++)
        {
            options.CancellationToken.ThrowIfCancellationRequested();
            double lr = LearningRateAt(step, options);
            foreach (var g in optimizer.ParamGroups) g.LearningRate = lr;
            using var scope = torch.NewDisposeScope();
            var idx = torch.randint(0, n, new long[] { Math.Min(options.BatchSize, n) }, generator: gen).to(device);
            var c = condDev.index_select(0, idx);
            var target = imgDev.index_select(0, idx);
            optimizer.zero_grad();
            var pred = model.forward(c);
            var loss = WeightedMse(pred, target, options.ObjectWeight);
            loss.backward();
            torch.nn.utils.clip_grad_norm_(parameters, 1.0);
            optimizer.step();
            double value = loss.item<float>();
            losses.Add(value);
            if (options.Progress is not null && (step % options.ReportEvery == 0 || step == options.Steps - 1))
                options.Progress.Report((step + 1, options.Steps, value));
        }
        model.eval();
        return losses;
    }

    internal static double LearningRateAt(int step, DecoderTrainingOptions o)
    {
        if (step < o.WarmupSteps) return o.LearningRate * (step + 1) / o.WarmupSteps;
        double progress = (double)(step - o.WarmupSteps) / Math.Max(1, o.Steps - o.WarmupSteps);
        return o.LearningRate * (0.05 + 0.95 * 0.5 * (1 + Math.Cos(Math.PI * progress)));
    }

    /// <summary>MSE where pixels brighter than the (dark) background weigh <paramref name="objectWeight"/>.</summary>
    internal static Tensor WeightedMse(Tensor pred, Tensor target, float objectWeight)
    {
        var objectMask = (target.amax(new long[] { 1 }, keepdim: true) > 0.2f).to(target.dtype);
        var weight = 1 + (objectWeight - 1) * objectMask;
        return ((pred - target).pow(2) * weight).mean();
    }

    /// <summary>Draws images for conditioning rows in batches, without gradients.</summary>
    public static Tensor Generate(TextToImageDecoder model, Tensor conditioning, int batchSize = 64)
    {
        model.eval();
        using var noGrad = torch.no_grad();
        var parts = new List<Tensor>();
        var device = model.parameters().First().device;
        for (long i = 0; i < conditioning.shape[0]; i += batchSize)
        {
            using var scope = torch.NewDisposeScope();
            var c = conditioning.narrow(0, i, Math.Min(batchSize, conditioning.shape[0] - i)).to(device);
            parts.Add(model.forward(c).cpu().MoveToOuterDisposeScope());
        }
        var result = torch.cat(parts, 0);
        foreach (var p in parts) p.Dispose();
        return result;
    }
}
