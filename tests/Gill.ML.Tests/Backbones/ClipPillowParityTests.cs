using System.Text.Json;
using Gill.ML.Imaging;

namespace Gill.ML.Tests.Backbones;

/// <summary>
/// Parity of the image preprocessing with real Pillow and transformers' CLIPImageProcessor outputs
/// (References/pil-bicubic.json and clip-processor.json, made by tools/reference/dump_references.py).
/// </summary>
[TestClass]
public sealed class ClipPillowParityTests
{
    private static JsonElement Load(string name) =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "References", name))).RootElement;

    private static RgbImage Input(JsonElement root)
    {
        var rows = root.GetProperty("input_hwc");
        int h = rows.GetArrayLength(), w = rows[0].GetArrayLength();
        var bytes = new byte[h * w * 3];
        int i = 0;
        foreach (var row in rows.EnumerateArray())
            foreach (var px in row.EnumerateArray())
                foreach (var c in px.EnumerateArray())
                    bytes[i++] = (byte)c.GetInt32();
        return new RgbImage(w, h, bytes);
    }

    [TestMethod]
    [DataRow(24, 19)]
    [DataRow(30, 24)]
    [DataRow(74, 58)]
    [DataRow(18, 14)]
    public void BicubicResizeMatchesPillowExactly(int width, int height)
    {
        var root = Load("pil-bicubic.json");
        var resized = Input(root).Resize(width, height, PilResampleFilter.Bicubic);
        var expected = root.GetProperty($"bicubic_{width}x{height}");
        Assert.AreEqual(height, expected.GetArrayLength());
        int i = 0, mismatches = 0, maxDiff = 0;
        foreach (var row in expected.EnumerateArray())
            foreach (var px in row.EnumerateArray())
                foreach (var c in px.EnumerateArray())
                {
                    int d = Math.Abs(c.GetInt32() - resized.Pixels[i++]);
                    if (d != 0) mismatches++;
                    maxDiff = Math.Max(maxDiff, d);
                }
        Assert.AreEqual(0, mismatches, $"{mismatches} channel values differ from Pillow (max diff {maxDiff})");
    }

    [TestMethod]
    public void ClipImageProcessorMatchesTransformers()
    {
        var pil = Load("pil-bicubic.json");
        var clip = Load("clip-processor.json");
        int size = clip.GetProperty("size").GetInt32(), crop = clip.GetProperty("crop").GetInt32();
        var processor = new ClipImageProcessor(new ClipImageProcessorOptions { ShortestEdge = size, CropHeight = crop, CropWidth = crop });
        var values = processor.PreprocessToArray(Input(pil), out int h, out int w);
        Assert.AreEqual(crop, h);
        Assert.AreEqual(crop, w);
        var expected = clip.GetProperty("pixel_values")[0];
        // transformers 5 resizes with torchvision's antialiased bicubic, which agrees with Pillow (what the original GILL
        // environment used, and what the resize test above matches exactly) except for rare ±1 rounding differences in
        // 8-bit values. Allow exactly that: at most one 8-bit level (1/255/std) on under 1% of the values.
        int i = 0, offByOneLevel = 0;
        double maxDiff = 0;
        foreach (var ch in expected.EnumerateArray())
            foreach (var row in ch.EnumerateArray())
                foreach (var v in row.EnumerateArray())
                {
                    double d = Math.Abs(v.GetDouble() - values[i++]);
                    if (d > 1e-5) offByOneLevel++;
                    maxDiff = Math.Max(maxDiff, d);
                }
        Assert.AreEqual(values.Length, i);
        double oneLevel = 1.0 / 255 / ClipImageProcessorOptions.ClipStd.Min();
        Assert.IsTrue(maxDiff <= oneLevel + 1e-5, $"max |diff| {maxDiff:E3} exceeds one 8-bit level ({oneLevel:E3})");
        Assert.IsTrue(offByOneLevel < values.Length / 100, $"{offByOneLevel} of {values.Length} values differ from CLIPImageProcessor");
    }
}
